"""STS GetCallerIdentity on the EC2 endpoint, routed by the credential scope's service."""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlencode

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import BIN, Server


def _signed(
    server: Server, acct, params: dict[str, str], service: str, secret: str | None = None
) -> httpx.Response:
    req = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    creds = Credentials(acct.access_key_id, secret or acct.secret_access_key)
    SigV4Auth(creds, service, "us-east-1").add_auth(req)
    prepared = req.prepare()
    return httpx.post(server.url + "/", content=prepared.body, headers=dict(prepared.headers))


def test_boto3_get_caller_identity(server: Server) -> None:
    acct = server.account()
    sts = server.client(acct, service="sts")
    who = sts.get_caller_identity()
    assert who["Account"] == acct.account_id
    assert who["UserId"] == acct.account_id
    assert who["Arn"] == f"arn:aws:iam::{acct.account_id}:root"
    assert who["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert who["ResponseMetadata"]["RequestId"]
    # another account's keys are another account
    other = server.client(server.account(), service="sts").get_caller_identity()
    assert other["Account"] != acct.account_id


def test_get_caller_identity_xml(server: Server) -> None:
    acct = server.account()
    reply = _signed(server, acct, {"Action": "GetCallerIdentity", "Version": "2011-06-15"}, "sts")
    assert reply.status_code == 200
    body = reply.text
    assert '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">' in body
    assert f"<Account>{acct.account_id}</Account>" in body
    assert "<GetCallerIdentityResult>" in body
    assert f"<RequestId>{reply.headers['x-amzn-requestid']}</RequestId>" in body


def test_other_sts_and_iam_actions_are_unknown(server: Server) -> None:
    acct = server.account()
    sts = server.client(acct, service="sts")
    with pytest.raises(ClientError) as err:
        sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/x", RoleSessionName="session")
    assert err.value.response["Error"]["Code"] == "InvalidAction"
    assert "AssumeRole" in err.value.response["Error"]["Message"]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    iam = server.client(acct, service="iam")
    with pytest.raises(ClientError) as err:
        iam.list_users()
    assert err.value.response["Error"]["Code"] == "InvalidAction"
    # an EC2 action signed for STS is not run as one
    reply = _signed(server, acct, {"Action": "DescribeVpcs", "Version": "2016-11-15"}, "sts")
    assert reply.status_code == 400
    assert "<Code>InvalidAction</Code>" in reply.text
    assert "<ErrorResponse" in reply.text


def test_sts_is_signed_as_strictly_as_ec2(server: Server) -> None:
    acct = server.account()
    params = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
    bad = _signed(server, acct, params, "sts", secret="x" * 40)
    assert bad.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in bad.text
    other = _signed(server, acct, params, "s3")
    assert other.status_code == 403
    assert "Credential should be scoped to correct service: 'ec2', not 's3'." in other.text
    unknown = server.client(server.account(), service="sts")
    unknown._request_signer._credentials = Credentials("AKIAUNKNOWNKEY000000", "y" * 40)
    with pytest.raises(ClientError) as err:
        unknown.get_caller_identity()
    assert err.value.response["Error"]["Code"] == "AuthFailure"


def test_aws_cli_get_caller_identity(sqlite_server: Server) -> None:
    acct = sqlite_server.account()
    env = sqlite_server.env(acct)
    env["AWS_ENDPOINT_URL_STS"] = sqlite_server.url
    out = subprocess.run(
        [str(BIN / "aws"), "sts", "get-caller-identity", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    who = json.loads(out.stdout)
    assert who == {
        "UserId": acct.account_id,
        "Account": acct.account_id,
        "Arn": f"arn:aws:iam::{acct.account_id}:root",
    }
