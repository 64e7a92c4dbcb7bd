"""How long the agent waits before trying again, and what kind of failure it is retrying.

:class:`Backoff` is exponential backoff with full jitter (AWS's "Exponential Backoff And
Jitter"): the n-th consecutive failure waits a uniformly random time in
``[0, min(cap, base * 2**n)]``, so agents that lost the same server do not come back in
step; a success resets it. Pure: the random source is passed in, so tests seed it.

:func:`classify` tells a bad record (the control plane answered something the agent cannot
read: it will most likely answer it again) from a transport failure (connection refused, a
timeout, a 5xx: the server is down or busy and will come back), a refusal (a 4xx: the
token or the request is wrong), the kernel refusing a transaction, and anything else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

from stockade.dataplane.nft import NftError

TRANSPORT = "transport"  # connection refused or reset, timeouts, 5xx
DECODE = "decode"  # an answer or a record the agent cannot read
REJECTED = "rejected"  # a 4xx: the control plane refused the request (token, host name)
KERNEL = "kernel"  # nft refused a transaction
INTERNAL = "internal"  # anything else (a bug)
KINDS = (TRANSPORT, DECODE, REJECTED, KERNEL, INTERNAL)


class RecordError(ValueError):
    """The control plane sent something the agent cannot decode (a bad record)."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; :meth:`reset` after a success."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0  # consecutive failures so far

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, not {self.base}, {self.cap}")

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures (1 = the first)."""
        exponent = min(max(failures - 1, 0), 64)  # 2**64 * base is past any cap
        return min(self.cap, self.base * 2.0**exponent)

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        return self.rng.uniform(0.0, self.ceiling(self.failures))

    def reset(self) -> None:
        self.failures = 0


def classify(exc: BaseException) -> str:
    """The kind of a failure (one of :data:`KINDS`)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return TRANSPORT if exc.response.status_code >= 500 else REJECTED
    if isinstance(exc, httpx.DecodingError | RecordError):
        return DECODE
    if isinstance(exc, httpx.TransportError):
        return TRANSPORT
    if isinstance(exc, NftError):
        return KERNEL
    return INTERNAL
