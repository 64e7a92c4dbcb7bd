"""Who is calling: the access-key cache, the credential checks and SigV4 verification.

:class:`Auth` answers, for an EC2 request, which account signed it (and whether the body is
covered by the signature); it reads the store for keys it has not seen for
:data:`KEY_CACHE_SECONDS`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from starlette.types import Scope

from stockade import accounts
from stockade.api import sigv4, sts
from stockade.errors import ApiError
from stockade.service.common import REGIONS
from stockade.store.db import Store

MSG_BAD_TOKEN = "The security token included in the request is invalid."
_ACCESS_KEY_ID = re.compile(r"[\x21-\x7e]{1,128}")
KEY_CACHE_SECONDS = 2.0


@dataclass
class Auth:
    store: Store
    # ``serve --accept-any-credentials``: an unknown access key gets an account of its own
    # and any secret signs for it (keys of real accounts are still verified)
    accept_any_credentials: bool = False
    _keys: dict[str, tuple[float, tuple[str, str] | None]] = field(default_factory=dict)

    def secret(self, access_key_id: str) -> tuple[str, str] | None:
        now = time.monotonic()
        hit = self._keys.get(access_key_id)
        if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
            return hit[1]
        found = accounts.secret_for(self.store, access_key_id)
        if self.accept_any_credentials:
            found = found or accounts.adopt_key(self.store, access_key_id)
        elif found is not None and found[1] == accounts.ANY_SECRET:
            found = None  # adopted by an earlier --accept-any-credentials run
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[access_key_id] = (now, found)
        return found

    def check_credentials(self, scope: Scope) -> tuple[sigv4.SignedRequest, str, str]:
        """Everything about a request's signature that can be checked before its body is
        read: its shape, age and scope, and that its access key exists and carries no
        session token. Returns the parsed signature, the account id and the secret key.
        A request without credentials is refused here, before a byte of its body is read."""
        signed = sigv4.parse_auth(
            scope["method"],
            scope.get("raw_path", b"/").decode("latin-1"),
            scope.get("query_string", b"").decode("latin-1"),
            {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            b"",
        )
        if signed.service != "ec2" and signed.service not in sts.SERVICES:
            raise ApiError(
                "SignatureDoesNotMatch",
                f"Credential should be scoped to correct service: 'ec2', not '{signed.service}'.",
                403,
            )
        if signed.region not in REGIONS:
            raise ApiError(
                "SignatureDoesNotMatch",
                f"Credential should be scoped to a valid region, not '{signed.region}'.",
                403,
            )
        found = None
        if _ACCESS_KEY_ID.fullmatch(signed.access_key_id):  # never look up a NUL (PostgreSQL)
            found = self.secret(signed.access_key_id)
        if found is None:
            raise ApiError(
                "AuthFailure", "AWS was not able to validate the provided access credentials", 401
            )
        if signed.security_token is not None:
            # Stockade's keys are long-term keys; AWS refuses a session token sent with one
            raise ApiError("AuthFailure", MSG_BAD_TOKEN, 401)
        account_id, secret = found
        return signed, account_id, secret

    @staticmethod
    def verify(signed: sigv4.SignedRequest, secret: str, body: bytes) -> bool:
        """Check the signature over ``body``; whether it covers the body. A key adopted by
        ``--accept-any-credentials`` accepts any signature (moto's and LocalStack's way)."""
        if secret == accounts.ANY_SECRET:
            return True
        return sigv4.verify(replace(signed, _body=body), secret)

    def authenticate(self, scope: Scope, body: bytes) -> tuple[str, str, bool]:
        """(account id, region, whether the body is signed) of a correctly signed request,
        or EC2's auth error."""
        signed, account_id, secret = self.check_credentials(scope)
        return account_id, signed.region, self.verify(signed, secret, body)
