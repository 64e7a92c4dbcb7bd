"""SigV4 verification against requests signed by botocore's real signers and by boto3."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.api.sigv4 import (
    MSG_MISMATCH,
    SignedRequest,
    _signing_key,
    parse_auth,
    verify,
)
from stockade.errors import ApiError

AK = "AKIDSTOCKADE0000001"
SK = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:8773"
ENDPOINT = f"http://{HOST}"
BODY = "Action=DescribeSecurityGroups&Version=2016-11-15"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
# A fixed past signing time (a leap day, just before midnight) keeps the tests deterministic.
SIGNED_AT = dt.datetime(2024, 2, 29, 23, 59, 30, tzinfo=dt.UTC)
DATE = "20240229"
STAMP = "20240229T235930Z"


@pytest.fixture(autouse=True)
def _frozen_signing_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore signs at SIGNED_AT; tests pass `now` explicitly."""

    def fake_now(remove_tzinfo: bool = True) -> dt.datetime:
        return SIGNED_AT.replace(tzinfo=None) if remove_tzinfo else SIGNED_AT

    monkeypatch.setattr(botocore.auth, "get_current_datetime", fake_now)


@dataclass
class Wire:
    """A request as the server receives it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def parse(self, now: dt.datetime = SIGNED_AT) -> SignedRequest:
        return parse_auth(self.method, self.path, self.query, self.headers, self.body, now=now)

    def check(self, secret: str = SK, now: dt.datetime = SIGNED_AT) -> SignedRequest:
        signed = self.parse(now)
        verify(signed, secret)
        return signed


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def to_wire(method: str, url: str, headers: Any, body: Any) -> Wire:
    parts = urlsplit(url)
    lowered = {name.lower(): _text(value) for name, value in headers.items()}
    lowered.setdefault("host", parts.netloc)  # added by the HTTP client on the wire
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode("utf-8")
    return Wire(method, parts.path, parts.query, lowered, bytes(body))


def sign_header(
    *,
    method: str = "POST",
    url: str = ENDPOINT + "/",
    data: str | None = BODY,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    region: str = "us-east-1",
    access_key: str = AK,
    token: str | None = None,
) -> Wire:
    request = AWSRequest(
        method=method,
        url=url,
        data=data,
        params=params,
        headers={"Content-Type": FORM} if headers is None else headers,
    )
    SigV4Auth(Credentials(access_key, SK, token), "ec2", region).add_auth(request)
    prepared = request.prepare()
    return to_wire(prepared.method, prepared.url, prepared.headers, prepared.body)


def sign_query(
    *,
    method: str = "GET",
    url: str = ENDPOINT + "/?Action=DescribeRegions&Version=2016-11-15",
    data: dict[str, str] | None = None,
    region: str = "eu-west-1",
    expires: int = 60,
    token: str | None = None,
    unsigned_payload: bool = False,
) -> Wire:
    request = AWSRequest(method=method, url=url, data=data)
    if unsigned_payload:
        request.context["payload_signing_enabled"] = False
    SigV4QueryAuth(Credentials(AK, SK, token), "ec2", region, expires=expires).add_auth(request)
    prepared = request.prepare()
    return to_wire(prepared.method, prepared.url, prepared.headers, prepared.body)


def raises(code: str, status: int, wire: Wire, now: dt.datetime = SIGNED_AT) -> ApiError:
    with pytest.raises(ApiError) as info:
        wire.check(now=now)
    assert (info.value.code, info.value.status) == (code, status), info.value.message
    return info.value


def with_auth(wire: Wire, authorization: str) -> Wire:
    return Wire(
        wire.method,
        wire.path,
        wire.query,
        {**wire.headers, "authorization": authorization},
        wire.body,
    )


# --- header form ----------------------------------------------------------------------------


def test_header_form_verifies_and_reads_scope() -> None:
    wire = sign_header()
    assert wire.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AK}/{DATE}/")
    signed = wire.check()
    assert (signed.access_key_id, signed.region, signed.service) == (AK, "us-east-1", "ec2")
    assert signed.security_token is None


def test_region_and_access_key_come_from_the_scope() -> None:
    signed = sign_header(region="eu-central-1", access_key="AKIAOTHERKEY").check()
    assert (signed.access_key_id, signed.region) == ("AKIAOTHERKEY", "eu-central-1")


def test_header_form_wrong_secret() -> None:
    signed = sign_header().parse()
    with pytest.raises(ApiError) as info:
        verify(signed, SK + "x")
    assert (info.value.code, info.value.status) == ("SignatureDoesNotMatch", 403)
    assert info.value.message == MSG_MISMATCH


def test_header_form_tampered_body() -> None:
    wire = sign_header()
    wire.body = wire.body.replace(b"DescribeSecurityGroups", b"DeleteSecurityGroup")
    raises("SignatureDoesNotMatch", 403, wire)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("content-type", "text/plain"),
        ("host", "evil.example:8773"),
        ("x-amz-date", "20240229T235931Z"),
    ],
)
def test_header_form_changed_signed_header(name: str, value: str) -> None:
    wire = sign_header()
    wire.headers[name] = value
    raises("SignatureDoesNotMatch", 403, wire)


def test_unsigned_headers_and_whitespace_do_not_matter() -> None:
    wire = sign_header()
    wire.headers["user-agent"] = "something/1.0"
    wire.headers["content-type"] = "  application/x-www-form-urlencoded;   charset=utf-8 "
    wire.check()


@pytest.mark.parametrize("minutes", [10, -10, 5.1, -5.1])
def test_header_form_outside_clock_skew_is_expired(minutes: float) -> None:
    error = raises(
        "RequestExpired", 400, sign_header(), now=SIGNED_AT + dt.timedelta(minutes=minutes)
    )
    assert error.message == "Request has expired."


@pytest.mark.parametrize("minutes", [4, -4, 5, -5])
def test_header_form_inside_clock_skew(minutes: int) -> None:
    sign_header().check(now=SIGNED_AT + dt.timedelta(minutes=minutes))


def test_default_now_is_the_real_clock() -> None:
    wire = sign_header()
    with pytest.raises(ApiError) as info:
        parse_auth(wire.method, wire.path, wire.query, wire.headers, wire.body)
    assert info.value.code == "RequestExpired"


def test_naive_now_is_utc() -> None:
    sign_header().check(now=SIGNED_AT.replace(tzinfo=None))


def test_header_form_with_params_in_the_query_string() -> None:
    wire = sign_header(
        method="GET",
        data=None,
        headers={},
        params={
            "Action": "DescribeSecurityGroups",
            "Filter.1.Name": "group-name",
            "Filter.1.Value.1": "a b+c/d~*é=&",
            "Foo": "1",
            "Foo.1": "2",
        },
    )
    assert "+" in wire.query  # spaces are sent as '+', signed as %20
    wire.check()
    wire.query = wire.query.replace("group-name", "group-id")
    raises("SignatureDoesNotMatch", 403, wire)


@pytest.mark.parametrize("path", ["/a/./b/../c//d/", "/x%20y~z", "", "/ec2/"])
def test_header_form_path_normalization(path: str) -> None:
    sign_header(method="GET", url=ENDPOINT + path, data=None, headers={}).check()


def test_header_form_with_date_header_instead_of_x_amz_date() -> None:
    wire = sign_header(headers={"Content-Type": FORM, "Date": "placeholder"})
    assert "x-amz-date" not in wire.headers
    assert wire.headers["date"] == "Thu, 29 Feb 2024 23:59:30 -0000"  # RFC 2822, from botocore
    assert "date" in wire.headers["authorization"].split("SignedHeaders=")[1]
    wire.check()


def test_header_form_with_content_sha256_header() -> None:
    import hashlib

    digest = hashlib.sha256(BODY.encode()).hexdigest()
    wire = sign_header(headers={"Content-Type": FORM, "X-Amz-Content-SHA256": digest})
    wire.check()
    wire.body = b"Action=DeleteSecurityGroup&GroupId=sg-1"  # the signed header still matches
    error = raises("SignatureDoesNotMatch", 403, wire)
    assert "x-amz-content-sha256" in error.message


def test_header_form_with_unsigned_payload_header() -> None:
    wire = sign_header(headers={"Content-Type": FORM, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    wire.check()


# --- query form (presigned) -----------------------------------------------------------------


def test_query_form_verifies() -> None:
    wire = sign_query()
    assert "X-Amz-Signature=" in wire.query and "authorization" not in wire.headers
    signed = wire.check()
    assert (signed.access_key_id, signed.region, signed.service) == (AK, "eu-west-1", "ec2")


def test_query_form_expiry() -> None:
    wire = sign_query(expires=60)
    wire.check(now=SIGNED_AT + dt.timedelta(seconds=60))
    error = raises("RequestExpired", 400, wire, now=SIGNED_AT + dt.timedelta(seconds=61))
    assert error.message == "Request has expired."


def test_query_form_from_the_future() -> None:
    wire = sign_query(expires=3600)
    wire.check(now=SIGNED_AT - dt.timedelta(minutes=4))
    raises("RequestExpired", 400, wire, now=SIGNED_AT - dt.timedelta(minutes=6))


def test_query_form_long_expiry_is_fine_within_its_window() -> None:
    sign_query(expires=604800).check(now=SIGNED_AT + dt.timedelta(days=6))


@pytest.mark.parametrize(
    ("old", "new"),
    [("DescribeRegions", "DescribeInstances"), ("X-Amz-Expires=60", "X-Amz-Expires=59")],
)
def test_query_form_tampered_param(old: str, new: str) -> None:
    wire = sign_query()
    wire.query = wire.query.replace(old, new)
    raises("SignatureDoesNotMatch", 403, wire)


def test_query_form_added_param() -> None:
    wire = sign_query()
    wire.query += "&DryRun=true"
    raises("SignatureDoesNotMatch", 403, wire)


def test_query_form_wrong_secret() -> None:
    with pytest.raises(ApiError) as info:
        verify(sign_query().parse(), "other")
    assert info.value.code == "SignatureDoesNotMatch"


def test_query_form_expires_over_a_week() -> None:
    error = raises("AuthFailure", 401, sign_query(expires=604801))
    assert error.message == "X-Amz-Expires must be less than a week (in seconds) that is 604800"


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "X-Amz-Expires should be a number"), ("-5", "X-Amz-Expires must be non-negative")],
)
def test_query_form_bad_expires(value: str, message: str) -> None:
    wire = sign_query()
    wire.query = wire.query.replace("X-Amz-Expires=60", f"X-Amz-Expires={value}")
    assert raises("AuthFailure", 401, wire).message == message


def test_query_form_presigned_post_moves_the_body_into_the_query() -> None:
    form = {"Action": "DescribeSecurityGroups", "Version": "2016-11-15", "GroupName.1": "a b"}
    wire = sign_query(method="POST", url=ENDPOINT + "/", data=form)
    assert "Action=DescribeSecurityGroups" in wire.query and wire.body == b""
    wire.check()


def test_query_form_unsigned_payload() -> None:
    wire = sign_query(url="https://127.0.0.1:8773/?Action=DescribeRegions", unsigned_payload=True)
    wire.check()
    wire.body = b"anything"  # UNSIGNED-PAYLOAD does not cover the body
    wire.check()


def test_query_form_session_token() -> None:
    wire = sign_query(token="FwoGZXIvYXdzE//token+with/slashes==")
    signed = wire.check()
    assert signed.security_token == "FwoGZXIvYXdzE//token+with/slashes=="
    wire.query = wire.query.replace("X-Amz-Security-Token=", "X-Amz-Security-Token=x")
    raises("SignatureDoesNotMatch", 403, wire)


def test_query_form_missing_parameters() -> None:
    error = raises("IncompleteSignature", 400, Wire("GET", "/", "X-Amz-Credential=a", {}, b""))
    assert error.message == (
        "AWS query-string parameters must include 'X-Amz-Algorithm'. "
        "AWS query-string parameters must include 'X-Amz-Signature'. "
        "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
        "AWS query-string parameters must include 'X-Amz-Date'. "
        "Re-examine the query-string parameters."
    )


def test_query_form_unsupported_algorithm() -> None:
    wire = sign_query()
    wire.query = wire.query.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")
    assert raises("IncompleteSignature", 400, wire).message == (
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'."
    )


def test_both_header_and_query_authentication() -> None:
    wire = sign_query()
    wire.headers["authorization"] = sign_header().headers["authorization"]
    error = raises("SignatureDoesNotMatch", 403, wire)
    assert error.message.startswith("Found both 'X-Amz-Algorithm'")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("%zz", "Illegal hex character in escape % pattern: %zz"),
        ("%4", "Incomplete trailing escape % sequence"),
    ],
)
def test_malformed_query_string(bad: str, message: str) -> None:
    wire = sign_query()
    wire.query += "&x=" + bad
    assert raises("MalformedQueryString", 404, wire).message == message


# --- boto3 end to end -----------------------------------------------------------------------

REGIONS_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    b"<requestId>2f2ba2d7-1f8e-4a45-9d59-f2d3b2c1a001</requestId>"
    b"<regionInfo><item><regionName>us-east-1</regionName>"
    b"<regionEndpoint>ec2.us-east-1.amazonaws.com</regionEndpoint></item></regionInfo>"
    b"</DescribeRegionsResponse>"
)


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def boto3_request(monkeypatch: pytest.MonkeyPatch, token: str | None = None) -> Wire:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    client = boto3.client(
        "ec2",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token=token,
    )
    captured: list[Wire] = []

    def capture(request: Any, **_: Any) -> AWSResponse:
        captured.append(to_wire(request.method, request.url, request.headers, request.body))
        return AWSResponse(request.url, 200, {"Content-Type": "text/xml"}, _Raw(REGIONS_XML))

    client.meta.events.register("before-send.ec2.DescribeRegions", capture)
    answer = client.describe_regions()
    assert answer["Regions"][0]["RegionName"] == "us-east-1"
    assert len(captured) == 1
    return captured[0]


def test_boto3_client_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = boto3_request(monkeypatch)
    assert wire.method == "POST" and wire.body.startswith(b"Action=DescribeRegions")
    signed = wire.check()
    assert (signed.access_key_id, signed.region, signed.service) == (AK, "us-east-1", "ec2")
    with pytest.raises(ApiError):
        verify(signed, "not-the-secret")


def test_boto3_client_with_session_token(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="
    wire = boto3_request(monkeypatch, token=token)
    assert "x-amz-security-token" in wire.headers["authorization"]
    signed = wire.check()
    assert signed.security_token == token
    wire.headers["x-amz-security-token"] = token + "x"
    raises("SignatureDoesNotMatch", 403, wire)


# --- AWS's own examples ---------------------------------------------------------------------


def test_signing_key_matches_aws_documentation_example() -> None:
    key = _signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_aws_test_suite_get_vanilla() -> None:
    wire = Wire(
        "GET",
        "/",
        "",
        {
            "host": "example.amazonaws.com",
            "x-amz-date": "20150830T123600Z",
            "authorization": "AWS4-HMAC-SHA256 "
            "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        b"",
    )
    signed = wire.check(now=dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC))
    assert signed.service == "service"


# --- malformed requests ---------------------------------------------------------------------


def test_no_authentication_at_all() -> None:
    wire = Wire("POST", "/", "", {"host": HOST, "x-amz-date": STAMP}, BODY.encode())
    error = raises("MissingAuthenticationToken", 401, wire)
    assert error.message == "Request is missing Authentication Token"


@pytest.mark.parametrize("garbage", ["foo", "Bearer abc.def", "AWS AKID:c2lnbmF0dXJl", "   "])
def test_non_sigv4_authorization_header(garbage: str) -> None:
    raises("MissingAuthenticationToken", 401, with_auth(sign_header(), garbage))


GOOD = (
    f"AWS4-HMAC-SHA256 Credential={AK}/{DATE}/us-east-1/ec2/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
)


@pytest.mark.parametrize("missing", ["Credential", "SignedHeaders", "Signature"])
def test_authorization_missing_a_parameter(missing: str) -> None:
    parts = [p for p in GOOD.split(" ", 1)[1].split(", ") if not p.startswith(missing + "=")]
    header = "AWS4-HMAC-SHA256 " + ", ".join(parts)
    error = raises("IncompleteSignature", 400, with_auth(sign_header(), header))
    assert error.message == (
        f"Authorization header requires '{missing}' parameter. Authorization={header}"
    )


def test_authorization_with_nothing_but_the_algorithm_and_no_date() -> None:
    wire = Wire("POST", "/", "", {"host": HOST, "authorization": "AWS4-HMAC-SHA256"}, b"")
    assert raises("IncompleteSignature", 400, wire).message == (
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=AWS4-HMAC-SHA256"
    )


def test_authorization_token_without_equal_sign() -> None:
    header = GOOD.replace(f"Credential={AK}", f"Credential= {AK}")
    assert raises("IncompleteSignature", 400, with_auth(sign_header(), header)).message == (
        f"'{AK}/{DATE}/us-east-1/ec2/aws4_request' not a valid key=value pair (missing "
        f"equal-sign) in Authorization header: '{header}'."
    )


@pytest.mark.parametrize("value", ["2026-11-23T12:00:00Z", "20261323T120000Z", "yesterday"])
def test_unparseable_x_amz_date(value: str) -> None:
    wire = sign_header()
    wire.headers["x-amz-date"] = value
    assert raises("IncompleteSignature", 400, wire).message == (
        f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def test_host_must_be_signed() -> None:
    header = GOOD.replace("content-type;host;x-amz-date", "content-type;x-amz-date")
    assert raises("SignatureDoesNotMatch", 403, with_auth(sign_header(), header)).message == (
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    )


def test_unsupported_algorithm() -> None:
    header = GOOD.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")
    assert raises("IncompleteSignature", 400, with_auth(sign_header(), header)).message == (
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'."
    )


def test_credential_scope_with_four_parts() -> None:
    header = GOOD.replace("/us-east-1/ec2/aws4_request", "/us-east-1/ec2")
    assert raises("IncompleteSignature", 400, with_auth(sign_header(), header)).message == (
        "Credential must have exactly 5 slash-delimited elements, "
        f"e.g. keyid/date/region/service/term, got '{AK}/{DATE}/us-east-1/ec2'"
    )


def test_credential_scope_with_wrong_terminator() -> None:
    header = GOOD.replace("aws4_request", "aws5_request")
    assert raises("SignatureDoesNotMatch", 403, with_auth(sign_header(), header)).message == (
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'."
    )


def test_credential_scope_date_differs_from_request_date() -> None:
    header = GOOD.replace(f"/{DATE}/", "/20240228/")
    assert raises("SignatureDoesNotMatch", 403, with_auth(sign_header(), header)).message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        f"HTTP: '20240228' != '{DATE}', from '{STAMP}'."
    )


@pytest.mark.parametrize("signature", ["not-hex-at-all", "Z" * 64, "é" * 64, "0" * 64, ""])
def test_bad_signature_values(signature: str) -> None:
    wire = sign_header()
    real = wire.headers["authorization"].rsplit("Signature=", 1)[1]
    wire = with_auth(wire, wire.headers["authorization"].replace(real, signature))
    code = "IncompleteSignature" if not signature else "SignatureDoesNotMatch"
    raises(code, 400 if not signature else 403, wire)


def test_uppercase_signature_is_not_the_signature() -> None:
    wire = sign_header()
    real = wire.headers["authorization"].rsplit("Signature=", 1)[1]
    raises(
        "SignatureDoesNotMatch",
        403,
        with_auth(wire, wire.headers["authorization"].replace(real, real.upper())),
    )


def test_signing_keys_are_cached() -> None:
    wire = sign_header()
    wire.check()
    before = _signing_key.cache_info().hits
    wire.check()
    assert _signing_key.cache_info().hits == before + 1


# --- fuzzing --------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "AWS4-HMAC-SHA256",
        "AWS4-",
        " ",
        ",",
        ", ",
        "=",
        "/",
        ";",
        "Credential=",
        "SignedHeaders=",
        "Signature=",
        AK,
        DATE,
        "us-east-1",
        "ec2",
        "aws4_request",
        "host",
        "x-amz-date",
        "0" * 64,
        "\x00",
        "é",
        "\ud800",
        "%",
    ]
)
_AUTH_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(_FRAGMENTS, max_size=40).map("".join),
    st.lists(_FRAGMENTS, max_size=40).map(lambda parts: "AWS4-HMAC-SHA256 " + "".join(parts)),
)


def _only_api_errors(wire: Wire, now: dt.datetime = SIGNED_AT) -> None:
    try:
        signed = wire.parse(now)
        verify(signed, SK)
    except ApiError as error:
        assert error.code and error.message and error.status in (400, 401, 403, 404)


@settings(max_examples=400, deadline=None)
@given(authorization=_AUTH_TEXT)
def test_random_authorization_headers_only_raise_api_errors(authorization: str) -> None:
    headers = {"host": HOST, "x-amz-date": STAMP, "authorization": authorization}
    _only_api_errors(Wire("POST", "/", "", headers, BODY.encode()))


@settings(max_examples=200, deadline=None)
@given(
    query=st.one_of(
        st.text(max_size=200),
        st.lists(
            st.sampled_from(
                [
                    "X-Amz-Algorithm=AWS4-HMAC-SHA256",
                    "X-Amz-Credential=" + AK + "%2F" + DATE + "%2Fus-east-1%2Fec2%2Faws4_request",
                    "X-Amz-Date=" + STAMP,
                    "X-Amz-Expires=60",
                    "X-Amz-Expires=-1",
                    "X-Amz-Expires=" + "9" * 5000,
                    "X-Amz-SignedHeaders=host",
                    "X-Amz-Signature=" + "0" * 64,
                    "X-Amz-Security-Token=a%2Bb",
                    "Action=DescribeRegions",
                    "%",
                    "=",
                    "+",
                    "%C3%A9",
                ]
            ),
            max_size=12,
        ).map("&".join),
    ),
    date=st.one_of(st.just(STAMP), st.text(max_size=40)),
    path=st.text(max_size=30),
)
def test_random_query_strings_and_dates_only_raise_api_errors(
    query: str, date: str, path: str
) -> None:
    headers = {"host": HOST, "x-amz-date": date, "date": date}
    _only_api_errors(Wire("GET", "/" + path, query, headers, b""))
