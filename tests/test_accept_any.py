"""`stockade serve --accept-any-credentials`: test suites written for moto or LocalStack run
unchanged with their fake keys (`testing`/`testing`), each key an account of its own; keys
of real accounts are still verified, and the flag is refused off loopback."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from conftest import BIN, Server, free_port, start_server, stop_server

FLAG = "--accept-any-credentials"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def any_server(request: pytest.FixtureRequest):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    server = start_server(url, args=(FLAG,))
    yield server
    stop_server(server)


def client(server: Server, key: str, secret: str, region: str = "us-east-1"):
    """A client as moto's and LocalStack's documentation write it."""
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=server.url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_testing_keys_work_like_moto(any_server):
    log = Path(any_server.data_dir, "server.log").read_text()
    assert "warning: --accept-any-credentials" in log
    ec2 = client(any_server, "testing", "testing")
    made = ec2.create_security_group(GroupName="moto-style", Description="from a moto suite")
    ec2.authorize_security_group_ingress(
        GroupId=made["GroupId"], IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8"
    )
    (group,) = ec2.describe_security_groups(GroupNames=["moto-style"])["SecurityGroups"]
    assert group["IpPermissions"][0]["FromPort"] == 22
    # any secret signs for the same key: the same account (moto accepts any secret)
    again = client(any_server, "testing", "something else")
    (seen,) = again.describe_security_groups(GroupIds=[made["GroupId"]])["SecurityGroups"]
    assert seen["OwnerId"] == group["OwnerId"]


def test_two_fake_keys_are_two_accounts(any_server):
    alice = client(any_server, "alice-" + uuid.uuid4().hex[:8], "fake")
    bob = client(any_server, "bob-" + uuid.uuid4().hex[:8], "fake")
    a = alice.create_security_group(GroupName="same-name", Description="alice's")["GroupId"]
    b = bob.create_security_group(GroupName="same-name", Description="bob's")["GroupId"]
    assert a != b
    owner_a = alice.describe_security_groups(GroupIds=[a])["SecurityGroups"][0]["OwnerId"]
    owner_b = bob.describe_security_groups(GroupIds=[b])["SecurityGroups"][0]["OwnerId"]
    assert owner_a != owner_b
    with pytest.raises(ClientError) as e:
        bob.describe_security_groups(GroupIds=[a])
    assert code(e) == "InvalidGroup.NotFound"
    # each got its own default VPC and default group
    assert {g["GroupName"] for g in bob.describe_security_groups()["SecurityGroups"]} == {
        "default",
        "same-name",
    }


def test_a_twelve_digit_key_is_the_account_id(any_server):
    key = "4" + str(uuid.uuid4().int)[:11]  # LocalStack's convention
    ec2 = client(any_server, key, "test")
    (default,) = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"]
    assert default["OwnerId"] == key


def test_real_accounts_keys_are_still_verified(any_server):
    acct = any_server.account()
    assert client(any_server, acct.access_key_id, acct.secret_access_key).describe_vpcs()["Vpcs"]
    with pytest.raises(ClientError) as e:
        client(any_server, acct.access_key_id, "not-the-secret").describe_vpcs()
    assert code(e) == "SignatureDoesNotMatch"


def test_a_key_that_cannot_be_an_account_is_refused(any_server):
    with pytest.raises(ClientError) as e:
        client(any_server, "k" * 40, "x").describe_vpcs()
    assert code(e) == "AuthFailure"


def test_without_the_flag_fake_keys_are_refused(sqlite_server):
    with pytest.raises(ClientError) as e:
        client(sqlite_server, "testing", "testing").describe_vpcs()
    assert code(e) == "AuthFailure"


def test_adopted_keys_stop_working_without_the_flag():
    flagged = start_server(args=(FLAG,))
    try:
        key = "adopted-" + uuid.uuid4().hex[:8]
        assert client(flagged, key, "any").describe_vpcs()["Vpcs"]
        plain = start_server(flagged.db_url)  # the same database, served without the flag
        try:
            with pytest.raises(ClientError) as e:
                client(plain, key, "any").describe_vpcs()
            assert code(e) == "AuthFailure"
        finally:
            stop_server(plain)
    finally:
        stop_server(flagged)


def test_with_workers():
    server = start_server(args=(FLAG, "--workers", "2"))
    try:
        ec2 = client(server, "testing-" + uuid.uuid4().hex[:6], "testing")
        assert ec2.create_security_group(GroupName="w", Description="w")["GroupId"]
        assert len(ec2.describe_security_groups()["SecurityGroups"]) == 2
    finally:
        stop_server(server)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
def test_refused_unless_on_loopback(host, tmp_path):
    out = subprocess.run(
        [str(BIN / "stockade"), "serve", FLAG, "--host", host, "--port", str(free_port())]
        + ["--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    text = " ".join(out.stderr.split())
    assert "needs a loopback --host" in text and host in text
    assert "Traceback" not in out.stderr


def test_env_of_an_adopted_key(any_server):
    key = "envkey-" + uuid.uuid4().hex[:6]
    made = client(any_server, key, "whatever").create_security_group(
        GroupName="e", Description="e"
    )["GroupId"]
    out = subprocess.run(
        [str(BIN / "stockade"), "env", f"key-{key}", "--endpoint", any_server.url]
        + ["--data-dir", any_server.data_dir, "--database-url", any_server.db_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    exports = dict(x.removeprefix("export ").split("=", 1) for x in out.stdout.splitlines())
    assert exports["AWS_ACCESS_KEY_ID"] == key and exports["AWS_SECRET_ACCESS_KEY"] == "any"
    assert "--accept-any-credentials" in " ".join(out.stderr.split())
    again = client(any_server, key, exports["AWS_SECRET_ACCESS_KEY"])
    assert again.describe_security_groups(GroupIds=[made])["SecurityGroups"]
