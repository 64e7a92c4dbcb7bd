"""What every service module shares: the request context, ids, filters, pagination, config.

Service functions take a :class:`Ctx` and the decoded request (snake_case keys) and return
the result (snake_case keys); the API layer does the wire format. A failure raises
:class:`~stockade.errors.ApiError` and the request's transaction rolls back.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from stockade.errors import ApiError
from stockade.store.db import Tx

Params = dict[str, Any]
Result = dict[str, Any]

# Every commercial AWS region (the aws partition), as DescribeRegions lists them
REGIONS: dict[str, str] = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "af-south-1": "Africa (Cape Town)",
    "ap-east-1": "Asia Pacific (Hong Kong)",
    "ap-east-2": "Asia Pacific (Taipei)",
    "ap-south-1": "Asia Pacific (Mumbai)",
    "ap-south-2": "Asia Pacific (Hyderabad)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-southeast-3": "Asia Pacific (Jakarta)",
    "ap-southeast-4": "Asia Pacific (Melbourne)",
    "ap-southeast-5": "Asia Pacific (Malaysia)",
    "ap-southeast-6": "Asia Pacific (New Zealand)",
    "ap-southeast-7": "Asia Pacific (Thailand)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-northeast-3": "Asia Pacific (Osaka)",
    "ca-central-1": "Canada (Central)",
    "ca-west-1": "Canada West (Calgary)",
    "eu-central-1": "Europe (Frankfurt)",
    "eu-central-2": "Europe (Zurich)",
    "eu-west-1": "Europe (Ireland)",
    "eu-west-2": "Europe (London)",
    "eu-west-3": "Europe (Paris)",
    "eu-south-1": "Europe (Milan)",
    "eu-south-2": "Europe (Spain)",
    "eu-north-1": "Europe (Stockholm)",
    "il-central-1": "Israel (Tel Aviv)",
    "me-south-1": "Middle East (Bahrain)",
    "me-central-1": "Middle East (UAE)",
    "mx-central-1": "Mexico (Central)",
    "sa-east-1": "South America (Sao Paulo)",
}
# the regions an AWS account has to opt in to (the rest are on for every account); Stockade
# answers in all of them, so DescribeRegions shows these as opted in
OPT_IN_REGIONS = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-south-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-west-1",
        "eu-central-2",
        "eu-south-1",
        "eu-south-2",
        "il-central-1",
        "me-south-1",
        "me-central-1",
        "mx-central-1",
    }
)
ZONE_LETTERS = "abc"


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


@dataclass
class Config:
    """Quotas and naming; every number can be set through the environment."""

    max_rules_per_group: int = field(
        default_factory=lambda: _env_int("STOCKADE_MAX_RULES_PER_GROUP", 60)
    )
    max_groups_per_region: int = field(
        default_factory=lambda: _env_int("STOCKADE_MAX_GROUPS_PER_REGION", 2500)
    )
    max_groups_per_interface: int = field(
        default_factory=lambda: _env_int("STOCKADE_MAX_GROUPS_PER_INTERFACE", 5)
    )
    max_tags_per_resource: int = 50
    public_domain: str = field(
        default_factory=lambda: os.environ.get("STOCKADE_PUBLIC_DOMAIN", "stockade.test")
    )
    # instances that are not stopped or terminated, per account and region (EC2's old
    # default was 20; Mary's site in seed 002 runs 7 + 20 + 2, so Stockade allows 32)
    max_instances: int = field(default_factory=lambda: _env_int("STOCKADE_MAX_INSTANCES", 32))
    # Elastic IPs per account and region
    max_addresses: int = field(default_factory=lambda: _env_int("STOCKADE_MAX_ADDRESSES", 5))
    # where public and Elastic IPs come from (one pool for every account and region)
    public_pool: str = field(
        default_factory=lambda: os.environ.get("STOCKADE_PUBLIC_POOL", "198.18.0.0/15")
    )
    # no hosts: pending instances run at once, stopping ones stop (see service/instances.py)
    auto_run: bool = field(default_factory=lambda: _env_bool("STOCKADE_AUTO_RUN", True))
    endpoint: str = "http://127.0.0.1:8773"


@dataclass
class Ctx:
    """One request: who asks, where, and the open transaction."""

    conn: Connection
    account_id: str
    region: str
    config: Config
    tx: Tx | None = None

    def log(self, kind: str, resource_id: str, **data: Any) -> None:
        assert self.tx is not None, "a change outside a write transaction"
        self.tx.log(self.account_id, self.region, kind, resource_id, **data)

    def arn(self, kind: str, resource_id: str, account_id: str | None = None) -> str:
        return f"arn:aws:ec2:{self.region}:{account_id or self.account_id}:{kind}/{resource_id}"


# --- ids ---------------------------------------------------------------------------------


class _IdBytes(threading.local):
    """Random bytes for ids and request ids, read from the OS 4 KiB at a time: one
    ``getrandom`` call per ~450 ids instead of one per id (``getrandom`` showed up at 2-9%
    of a write's time here). A forked process starts a pool of its own, so no two
    processes hand out the same bytes."""

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.pool):
            self.pool, self.at = os.urandom(4096), 0
        start = self.at
        self.at = start + n
        return self.pool[start : self.at]


_id_bytes = _IdBytes()
os.register_at_fork(after_in_child=_id_bytes.__init__)


def random_bytes(n: int) -> bytes:
    """``os.urandom(n)``, from the pool (for ids and request ids, not for secrets)."""
    return _id_bytes.take(n)


def new_id(prefix: str) -> str:
    return f"{prefix}-{_id_bytes.take(9).hex()[:17]}"


@functools.cache
def _id_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-(?:[0-9a-f]{{8}}|[0-9a-f]{{17}})")


def check_id(value: Any, prefix: str, code: str) -> str:
    """Raise EC2's ``*.Malformed`` error unless ``value`` looks like ``prefix-<hex>``."""
    if not isinstance(value, str) or not _id_pattern(prefix).fullmatch(value):
        raise ApiError(code, f'Invalid id: "{value}" (expecting "{prefix}-...")')
    return value


# --- text checks -------------------------------------------------------------------------

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def check_text(value: Any, param: str, *, max_len: int = 255, required: bool = True) -> str:
    """Names and descriptions: printable ASCII, at most ``max_len`` characters."""
    if value is None or value == "":
        if required:
            raise ApiError("MissingParameter", f"The request must contain the parameter {param}")
        return ""
    if not isinstance(value, str):
        raise ApiError("InvalidParameterValue", f"Value for parameter {param} must be a string.")
    if len(value) > max_len:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value[:40]}...) for parameter {param} is invalid. "
            f"Length exceeds maximum of {max_len} characters.",
        )
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter {param} is invalid. "
            "Character sets beyond ASCII are not supported.",
        )
    return value


# --- filters -----------------------------------------------------------------------------

FilterSpec = dict[str, Callable[[Result], Iterable[Any]]]


# EC2's limits on filters: at most 200 values in all in one request (FilterLimitExceeded
# past that), each at most 255 characters (EC2 caps its string values there too). With
# them, and a matcher whose work is linear in the value, a request's filtering is bounded.
MAX_FILTER_VALUES = 200
MAX_FILTER_VALUE_LENGTH = 255


class _Exact:
    """A filter value with no wildcard: compared as text (a regex per distinct value cost a
    ``re.compile`` each time once clients sent more distinct values than the cache holds:
    a name filter at 10,000 groups was 25% slower than at 100)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def fullmatch(self, value: str) -> bool:
        return value == self.text


class _Segment:
    """A run of a pattern between two ``*``: literal text, where ``?`` (unescaped) stands
    for any one character. Found with ``str.find`` when it has no ``?``, else with a regex
    of literals and ``.`` (no repetition in it, so no backtracking: O(len(value) *
    len(segment)) at worst)."""

    __slots__ = ("any", "length", "regex", "text")

    def __init__(self, chars: list[str | None]) -> None:
        self.length = len(chars)
        self.any = all(c is None for c in chars)  # only ``?``: any text of that length
        self.text: str | None = None
        self.regex: re.Pattern[str] | None = None
        if None not in chars:
            self.text = "".join(chars)  # type: ignore[arg-type]
        elif not self.any:
            self.regex = re.compile(
                "".join("." if c is None else re.escape(c) for c in chars), re.DOTALL
            )

    def at(self, value: str, pos: int) -> bool:
        """Whether the segment matches ``value`` at exactly ``pos``."""
        if self.text is not None:
            return value.startswith(self.text, pos)
        if self.regex is None:
            return pos + self.length <= len(value)
        return self.regex.match(value, pos) is not None

    def find(self, value: str, pos: int, end: int) -> int:
        """The leftmost position in ``[pos, end)`` where the segment fits whole, or -1."""
        if self.text is not None:
            return value.find(self.text, pos, end)
        if self.regex is None:
            return pos if pos + self.length <= end else -1
        found = self.regex.search(value, pos, end)
        return -1 if found is None else found.start()


class _Wildcard:
    """An EC2 wildcard value matched in linear time (the textbook glob algorithm).

    The pattern is cut at each ``*`` into segments. The first must match at the start and
    the last at the end; each segment in between is taken at its leftmost place after the
    one before. Leftmost is always safe: any match that puts a segment further right leaves
    less room for the rest, so a greedy scan never needs to go back (a backtracking regex
    such as ``.*a.*a.*a.*b`` explores every way of placing the ``a``s instead)."""

    __slots__ = ("first", "last", "middle", "minimum", "star")

    def __init__(self, pattern: str) -> None:
        segments: list[list[str | None]] = [[]]
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "\\" and i + 1 < len(pattern):
                segments[-1].append(pattern[i + 1])
                i += 2
                continue
            if ch == "*":
                segments.append([])
            else:
                segments[-1].append(None if ch == "?" else ch)
            i += 1
        parts = [_Segment(chars) for chars in segments]
        self.star = len(parts) > 1
        self.first = parts[0]
        self.last = parts[-1]
        self.middle = [p for p in parts[1:-1] if p.length]
        self.minimum = sum(p.length for p in parts)

    def fullmatch(self, value: str) -> bool:
        if not self.star:
            return len(value) == self.first.length and self.first.at(value, 0)
        end = len(value) - self.last.length
        if end < self.first.length or not self.first.at(value, 0):
            return False
        if not self.last.at(value, end):
            return False
        pos = self.first.length
        for segment in self.middle:
            found = segment.find(value, pos, end)
            if found < 0:
                return False
            pos = found + segment.length
        return True


def _wildcard(pattern: str) -> _Wildcard | _Exact:
    """EC2 filter values: ``*`` any run, ``?`` one character, ``\\`` escapes."""
    if "*" not in pattern and "?" not in pattern and "\\" not in pattern:
        return _Exact(pattern)
    return _wildcard_pattern(pattern)


@functools.lru_cache(maxsize=1024)
def _wildcard_pattern(pattern: str) -> _Wildcard:
    return _Wildcard(pattern)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def tag_values(item: Result, key: str | None = None) -> list[str]:
    return [t["value"] for t in item.get("tags") or () if key is None or t["key"] == key]


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def legacy_filter_name(name: str) -> str:
    """The filter name of today for one of the camel-case names EC2 still accepts
    (``isDefault`` for ``is-default``, ``availabilityZone``, ``groupId``, ...)."""
    return _CAMEL.sub(r"-\1", name).lower() if name[:1].islower() else name


def parse_filters(filters: Sequence[Params] | None, spec: FilterSpec) -> list[tuple[str, list]]:
    """Check filter names against ``spec`` (plus tag:K, tag-key, tag-value) and EC2's limits
    on the number and length of values."""
    parsed = []
    total = 0
    for f in filters or ():
        name = f.get("name")
        values = f.get("values")
        if not name:
            raise ApiError("InvalidParameterValue", "The filter 'null' is invalid")
        known = name in spec or name.startswith("tag:") or name in ("tag-key", "tag-value")
        if not known and legacy_filter_name(name) in spec:
            name, known = legacy_filter_name(name), True
        if not known:
            shown = name if len(name) <= MAX_FILTER_VALUE_LENGTH else name[:40] + "..."
            raise ApiError("InvalidParameterValue", f"The filter '{shown}' is invalid")
        if not values:
            raise ApiError(
                "InvalidParameterValue", f"The filter '{name}' must have at least one value"
            )
        total += len(values)
        if total > MAX_FILTER_VALUES:
            raise ApiError(
                "FilterLimitExceeded",
                f"The maximum number of filter values specified on a single call is "
                f"{MAX_FILTER_VALUES}",
            )
        for value in values:
            if len(str(value)) > MAX_FILTER_VALUE_LENGTH:
                raise ApiError(
                    "InvalidParameterValue",
                    f"Value ({str(value)[:40]}...) for parameter Filter.Value is invalid. "
                    f"Length exceeds maximum of {MAX_FILTER_VALUE_LENGTH} characters.",
                )
        parsed.append((name, [_wildcard(str(v)) for v in values]))
    return parsed


def filter_values(item: Result, name: str, spec: FilterSpec) -> Iterable[Any]:
    if name.startswith("tag:"):
        return tag_values(item, name[4:])
    if name == "tag-key":
        return [t["key"] for t in item.get("tags") or ()]
    if name == "tag-value":
        return tag_values(item)
    return spec[name](item)


def matches(item: Result, filters: list[tuple[str, list]], spec: FilterSpec) -> bool:
    """All filters must match; within one filter, any value may."""
    for name, patterns in filters:
        values = [_as_text(v) for v in filter_values(item, name, spec) if v is not None]
        if not any(p.fullmatch(v) for p in patterns for v in values):
            return False
    return True


def exact_filter_values(filters: Sequence[Params] | None, name: str) -> list[str] | None:
    """Values of filter ``name`` if they contain no wildcard (for pushing into SQL)."""
    for f in filters or ():
        if f.get("name") == name:
            values = [str(v) for v in f.get("values") or ()]
            if values and not any(ch in v for v in values for ch in "*?\\"):
                return values
    return None


# --- pagination --------------------------------------------------------------------------


def check_max_results(value: int | None, lo: int = 5, hi: int = 1000) -> int | None:
    if value is None:
        return None
    if not lo <= value <= hi:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ( {value} ) for parameter maxResults is invalid. "
            f"Expecting a value between {lo} and {hi}.",
        )
    return value


# Next tokens are opaque and tamper-proof: the position (a sort key) with an HMAC of it by
# a key every server process of a database shares (the settings table, see api/app.py).
# Only a token this service made is ever read, so its content (JSON before) is never
# parsed from a client's bytes; tokens do not outlive a change of key.
MAX_TOKEN_LENGTH = 1024
_TOKEN_MAC_BYTES = 16
_token_key = [os.urandom(32)]


def set_token_key(key: bytes) -> None:
    """Sign and check next tokens with ``key`` (the one kept in the database)."""
    _token_key[0] = key


def _token_mac(kind: str, after: bytes) -> bytes:
    message = kind.encode() + b"\x00" + after
    return hmac.digest(_token_key[0], message, "sha256")[:_TOKEN_MAC_BYTES]


def encode_token(after: str, kind: str = "") -> str:
    """A next token for the page after ``after`` of a listing sorted by ``kind``."""
    raw = after.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(_token_mac(kind, raw) + raw).decode().rstrip("=")


def _bad_token(token: str) -> ApiError:
    shown = token if len(token) <= 64 else token[:64] + "..."
    return ApiError("InvalidPaginationToken", f"The pagination token '{shown}' is not valid.")


def decode_token(token: str | None, kind: str = "") -> str | None:
    """Where the page of ``token`` starts, or ``InvalidPaginationToken`` for a token this
    service did not make for a listing sorted by ``kind``."""
    if token is None:
        return None
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise _bad_token(str(token))
    try:
        data = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise _bad_token(token) from None
    mac, raw = data[:_TOKEN_MAC_BYTES], data[_TOKEN_MAC_BYTES:]
    if len(mac) < _TOKEN_MAC_BYTES or not hmac.compare_digest(mac, _token_mac(kind, raw)):
        raise _bad_token(token)
    return raw.decode("utf-8", "surrogatepass")


def paginate(
    items: list[Result], key: str, max_results: int | None, token: str | None
) -> tuple[list[Result], str | None]:
    """Keyset pages over ``items`` sorted by ``key``; returns the page and the next token."""
    after = decode_token(token, key)
    items = sorted(items, key=lambda it: it[key])
    if after is not None:
        items = [it for it in items if it[key] > after]
    if max_results is None or len(items) <= max_results:
        return items, None
    page = items[:max_results]
    return page, encode_token(page[-1][key], key)


# --- registry of actions ------------------------------------------------------------------

Handler = Callable[[Ctx, Params], Result]


@dataclass(frozen=True)
class Action:
    name: str
    handler: Handler
    write: bool


# every action the API serves, by name: filled by stockade.api.actions from its explicit
# list of service modules (importing a module registers nothing by itself)
ACTIONS: dict[str, Action] = {}
_MARK = "ec2_actions"


def action(name: str, *, write: bool) -> Callable[[Handler], Handler]:
    """Mark ``fn`` as the handler of EC2 action ``name`` (see :func:`actions_of`)."""

    def mark(fn: Handler) -> Handler:
        marks = fn.__dict__.setdefault(_MARK, [])
        marks.append(Action(name, fn, write))
        return fn

    return mark


def actions_of(module: Any) -> list[Action]:
    """The actions whose handlers ``module`` defines (marked with :func:`action`)."""
    found = []
    for value in vars(module).values():
        if callable(value) and getattr(value, "__module__", None) == module.__name__:
            found.extend(getattr(value, _MARK, ()))
    return found
