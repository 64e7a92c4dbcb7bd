"""AWS Signature Version 4 verification, as EC2 does it.

Two steps so the server can look the secret up in between: :func:`parse_auth` checks the shape
and the age of the signature (``Authorization`` header or presigned query string) and returns a
:class:`SignedRequest`; :func:`verify` recomputes the signature the way botocore's
``SigV4Auth``/``SigV4QueryAuth`` compute it and compares. The checks run in the order AWS runs
them and fail with AWS's error codes and messages.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, unquote_to_bytes

from stockade.errors import ApiError

__all__ = [
    "ALGORITHM",
    "MAX_CLOCK_SKEW",
    "MAX_EXPIRES",
    "UNSIGNED_PAYLOAD",
    "SignedRequest",
    "parse_auth",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
#: How far the request time may be from the server's clock (header form; future side of query form).
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: Largest X-Amz-Expires accepted for presigned requests: one week.
MAX_EXPIRES = 604800
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

MSG_MISSING_TOKEN = "Request is missing Authentication Token"
MSG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
MSG_EXPIRED = "Request has expired."
MSG_HOST_NOT_SIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
MSG_CONTENT_SHA256 = "The provided 'x-amz-content-sha256' header does not match what was computed."

_ISO_BASIC = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DIGITS = re.compile(r"[0-9]{1,10}")

_QUERY_AUTH_KEYS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)
_QUERY_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-SignedHeaders",
    "X-Amz-Date",
)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature has a valid shape and age; :func:`verify` finishes the check."""

    access_key_id: str
    region: str  # from the credential scope
    service: str  # from the credential scope (EC2 clients sign for "ec2")
    security_token: str | None  # X-Amz-Security-Token (header or query), not checked here
    _timestamp: str = field(repr=False)  # YYYYMMDDTHHMMSSZ, as in the string to sign
    _scope_date: str = field(repr=False)
    _canonical_prefix: str = field(repr=False)  # canonical request without the payload hash
    _signature: bytes = field(repr=False)
    _content_sha256: str | None = field(repr=False)  # X-Amz-Content-SHA256 header, if sent
    _body: bytes = field(repr=False)
    _query_form: bool = field(repr=False)


def _enc(text: str) -> bytes:
    # Header values arrive as str; never let an odd code point turn into a 500.
    return text.encode("utf-8", "surrogatepass")


def _incomplete(message: str) -> ApiError:
    return ApiError("IncompleteSignature", message, 400)


def _mismatch(message: str = MSG_MISMATCH) -> ApiError:
    return ApiError("SignatureDoesNotMatch", message, 403)


def _auth_failure(message: str) -> ApiError:
    return ApiError("AuthFailure", message, 401)


def _normalize(element: str) -> str:
    """One query key or value in canonical form: decoded, then RFC 3986 percent-encoded."""
    if _UNRESERVED.fullmatch(element):
        return element
    bad = _BAD_ESCAPE.search(element)
    if bad:
        digits = element[bad.start() + 1 : bad.start() + 3]
        if len(digits) < 2:
            raise ApiError("MalformedQueryString", "Incomplete trailing escape % sequence", 404)
        raise ApiError(
            "MalformedQueryString", f"Illegal hex character in escape % pattern: %{digits}", 404
        )
    # '+' is a space in a query string (botocore's AWSRequest encodes params with quote_plus).
    raw = unquote_to_bytes(_enc(element.replace("+", "%20")))
    return quote(raw, safe="-_.~")


def _query_pairs(query_string: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query_string.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((_normalize(key), _normalize(value)))
    return pairs


def _remove_dot_segments(path: str) -> str:
    # botocore.utils.remove_dot_segments: RFC 3986 5.2.4, plus empty segments dropped.
    out: list[str] = []
    for segment in path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if out:
                    out.pop()
            else:
                out.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


def _canonical_path(path: str) -> str:
    if path == "/" or not path:
        return "/"
    return quote(_enc(_remove_dot_segments(path)), safe="/~")


@functools.lru_cache(maxsize=64)  # concurrent requests share their timestamps
def _parse_time(value: str, http_date: bool) -> tuple[datetime, str]:
    if _ISO_BASIC.fullmatch(value):
        try:
            when = datetime(
                int(value[0:4]),
                int(value[4:6]),
                int(value[6:8]),
                int(value[9:11]),
                int(value[11:13]),
                int(value[13:15]),
                tzinfo=UTC,
            )
        except ValueError:
            pass
        else:
            return when, value
    elif http_date:
        # botocore sends an RFC 7231 Date header (and signs its ISO form) when a Date is set.
        try:
            when = parsedate_to_datetime(value)
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
        else:
            return when, when.strftime("%Y%m%dT%H%M%SZ")
    raise _incomplete(
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _check_expires(raw: str) -> int:
    if _DIGITS.fullmatch(raw):
        seconds = int(raw)
        if seconds <= MAX_EXPIRES:
            return seconds
    elif raw.startswith("-") and raw[1:].isascii() and raw[1:].isdigit():
        raise _auth_failure("X-Amz-Expires must be non-negative")
    elif not (raw.isascii() and raw.isdigit()):
        raise _auth_failure("X-Amz-Expires should be a number")
    raise _auth_failure(
        f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES}"
    )


def parse_auth(
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> SignedRequest:
    """Check the signature's shape and age; return what :func:`verify` needs.

    ``path`` and ``query_string`` are the raw, still percent-encoded request target as sent
    (ASGI ``raw_path``/``query_string``); ``headers`` maps lower-case names to values (repeated
    headers joined with ``,``). Raises :class:`ApiError` with EC2's code for a missing,
    malformed or expired signature.
    """
    pairs = _query_pairs(query_string) if query_string else []
    query_auth: dict[str, str] = {}
    for key, value in pairs:
        if key in _QUERY_AUTH_KEYS and key not in query_auth:
            query_auth[key] = unquote(value)

    authorization = headers.get("authorization")
    if authorization is not None and authorization.strip():
        if "X-Amz-Algorithm" in query_auth:
            raise _mismatch(
                "Found both 'X-Amz-Algorithm' as a query-string param "
                "and 'Authorization' as HTTP header."
            )
        query_form = False
        fields = _from_header(authorization, headers)
    elif query_auth.keys() & {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"}:
        query_form = True
        fields = _from_query(query_auth)
    else:
        raise ApiError("MissingAuthenticationToken", MSG_MISSING_TOKEN, 401)
    algorithm, credential, signed_headers, signature, raw_date, http_date, token = fields

    when, timestamp = _parse_time(raw_date, http_date)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    age = current - when
    if query_form:
        raw_expires = query_auth.get("X-Amz-Expires")
        if raw_expires is not None:
            if age > timedelta(seconds=_check_expires(raw_expires)) or -age > MAX_CLOCK_SKEW:
                raise ApiError("RequestExpired", MSG_EXPIRED, 400)
        elif abs(age) > MAX_CLOCK_SKEW:
            raise ApiError("RequestExpired", MSG_EXPIRED, 400)
    elif abs(age) > MAX_CLOCK_SKEW:
        raise ApiError("RequestExpired", MSG_EXPIRED, 400)

    names = sorted(signed_headers.lower().split(";"))
    if "host" not in names and ":authority" not in names:
        raise _mismatch(MSG_HOST_NOT_SIGNED)
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported AWS 'algorithm': '{algorithm}'.")

    parts = credential.split("/")
    while parts and not parts[-1]:  # AWS ignores trailing slashes (Java's String.split)
        parts.pop()
    if len(parts) != 5:
        raise _incomplete(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{credential}'"
        )
    access_key_id, scope_date, region, service, terminator = parts
    problems = []
    if not region:
        problems.append(f"Credential should be scoped to a valid region, not '{region}'.")
    if terminator != TERMINATOR:
        problems.append(
            f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
            f"not '{terminator}'."
        )
    if scope_date != timestamp[:8]:
        problems.append(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope_date}' != '{timestamp[:8]}', from '{timestamp}'."
        )
    if problems:
        raise _mismatch(" ".join(problems))

    if pairs:
        if query_form:
            pairs = [pair for pair in pairs if pair[0] != "X-Amz-Signature"]
        pairs.sort()
        canonical_query = "&".join([f"{key}={value}" for key, value in pairs])
    else:
        canonical_query = ""
    lines = []
    for name in names:
        value = headers.get(name)
        if value is not None:
            lines.append(f"{name}:{' '.join(value.split())}")
    canonical_headers = "\n".join(lines)
    prefix = (
        f"{method}\n{_canonical_path(path)}\n{canonical_query}\n"
        f"{canonical_headers}\n\n{';'.join(names)}\n"
    )
    return SignedRequest(
        access_key_id=access_key_id,
        region=region,
        service=service,
        security_token=token,
        _timestamp=timestamp,
        _scope_date=scope_date,
        _canonical_prefix=prefix,
        _signature=_enc(signature),
        _content_sha256=headers.get("x-amz-content-sha256"),
        _body=body,
        _query_form=query_form,
    )


_Fields = tuple[str, str, str, str, str, bool, str | None]


def _from_header(authorization: str, headers: Mapping[str, str]) -> _Fields:
    """Split ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    text = authorization.strip()
    if not text.startswith("AWS4-"):
        raise ApiError("MissingAuthenticationToken", MSG_MISSING_TOKEN, 401)
    tokens = text.replace(",", " ").split()  # AWS splits on commas and whitespace
    params: dict[str, str] = {}
    for token in tokens[1:]:
        if token:
            key, equals, value = token.partition("=")
            if not equals:
                raise _incomplete(
                    f"'{token}' not a valid key=value pair (missing equal-sign) "
                    f"in Authorization header: '{authorization}'."
                )
            params[key] = value

    missing = []
    credential = params.get("Credential", "")
    if not credential:
        missing.append("Authorization header requires 'Credential' parameter.")
    signature = params.get("Signature", "")
    if not signature:
        missing.append("Authorization header requires 'Signature' parameter.")
    signed_headers = params.get("SignedHeaders")
    if signed_headers is None:
        missing.append("Authorization header requires 'SignedHeaders' parameter.")
    raw_date = headers.get("x-amz-date")
    http_date = not raw_date
    if http_date:
        raw_date = headers.get("date")
        if not raw_date:
            missing.append(
                "Authorization header requires existence of either a 'X-Amz-Date' "
                "or a 'Date' header."
            )
    if missing or signed_headers is None or not raw_date:
        raise _incomplete(f"{' '.join(missing)} Authorization={authorization}")
    token = headers.get("x-amz-security-token")
    return tokens[0], credential, signed_headers, signature, raw_date, http_date, token


def _from_query(query_auth: dict[str, str]) -> _Fields:
    """Pick the X-Amz-* parameters of a presigned request (first occurrence of each)."""
    missing = [
        f"AWS query-string parameters must include '{key}'."
        for key in _QUERY_REQUIRED
        if not query_auth.get(key)
    ]
    if missing:
        raise _incomplete(f"{' '.join(missing)} Re-examine the query-string parameters.")
    return (
        query_auth["X-Amz-Algorithm"],
        query_auth["X-Amz-Credential"],
        query_auth["X-Amz-SignedHeaders"],
        query_auth["X-Amz-Signature"],
        query_auth["X-Amz-Date"],
        False,
        query_auth.get("X-Amz-Security-Token"),
    )


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.digest(_enc("AWS4" + secret), _enc(date), "sha256")
    key = hmac.digest(key, _enc(region), "sha256")
    key = hmac.digest(key, _enc(service), "sha256")
    return hmac.digest(key, b"aws4_request", "sha256")


def verify(signed: SignedRequest, secret_access_key: str) -> bool:
    """Recompute the signature with ``secret_access_key``; raise ``SignatureDoesNotMatch``.

    Returns whether the signature covers the body: False when it signs UNSIGNED-PAYLOAD
    (declared in X-Amz-Content-SHA256, or a presigned URL's), so that the caller never
    uses what the body says."""
    key = _signing_key(secret_access_key, signed._scope_date, signed.region, signed.service)
    head = (
        f"{ALGORITHM}\n{signed._timestamp}\n"
        f"{signed._scope_date}/{signed.region}/{signed.service}/{TERMINATOR}\n"
    )
    declared = signed._content_sha256
    if declared is not None:
        candidates: tuple[str, ...] = (declared,)
    else:
        body_hash = hashlib.sha256(signed._body).hexdigest() if signed._body else EMPTY_SHA256
        # Presigned requests may sign UNSIGNED-PAYLOAD instead of the body's hash.
        candidates = (body_hash, UNSIGNED_PAYLOAD) if signed._query_form else (body_hash,)
    for payload_hash in candidates:
        canonical = _enc(signed._canonical_prefix + payload_hash)
        string_to_sign = head + hashlib.sha256(canonical).hexdigest()
        expected = hmac.digest(key, _enc(string_to_sign), "sha256").hex()
        if hmac.compare_digest(expected.encode("ascii"), signed._signature):
            break
    else:
        raise _mismatch()
    if payload_hash == UNSIGNED_PAYLOAD:
        return False
    if declared is not None:
        # The signature covers the declared hash; make sure it is the hash of this body.
        actual = hashlib.sha256(signed._body).hexdigest() if signed._body else EMPTY_SHA256
        if not hmac.compare_digest(_enc(declared), actual.encode("ascii")):
            raise _mismatch(MSG_CONTENT_SHA256)
    return True
