"""The `stockade` command (accounts, env) and the AWS CLI pointed at Stockade."""

from __future__ import annotations

import json
import subprocess

from conftest import BIN


def stockade(*args: str, data_dir: str, db_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "stockade"), *args, "--data-dir", data_dir, "--database-url", db_url],
        capture_output=True,
        text=True,
    )


def aws(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "aws"), "ec2", *args, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
    )


def test_account_commands(server):
    kw = {"data_dir": server.data_dir, "db_url": server.db_url}
    made = stockade("account", "create", "carol", "--json", **kw)
    assert made.returncode == 0, made.stderr
    acct = json.loads(made.stdout)
    assert set(acct) == {"account_id", "access_key_id", "secret_access_key"}
    assert len(acct["account_id"]) == 12 and acct["account_id"].isdigit()
    again = stockade("account", "create", "carol", **kw)
    assert again.returncode != 0 and "already exists" in again.stderr
    listed = json.loads(stockade("account", "list", "--json", **kw).stdout)
    assert {"default", "carol"} <= {a["name"] for a in listed}
    # the new account works against the running server at once
    from stockade.accounts import Account

    client = server.client(Account("carol", **acct))
    assert client.describe_security_groups()["SecurityGroups"][0]["OwnerId"] == acct["account_id"]
    gone = stockade("account", "delete", "carol", **kw)
    assert gone.returncode == 0, gone.stderr
    assert "carol" not in {
        a["name"] for a in json.loads(stockade("account", "list", "--json", **kw).stdout)
    }
    missing = stockade("account", "delete", "carol", **kw)
    assert missing.returncode != 0 and "no account named" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_env_then_aws_cli(server):
    out = stockade("env", "--endpoint", server.url, data_dir=server.data_dir, db_url=server.db_url)
    assert out.returncode == 0, out.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_EC2",
        "EC2_URL",
        "EC2_ACCESS_KEY",
        "EC2_SECRET_KEY",
    ):
        assert key in exports
    assert exports["AWS_ENDPOINT_URL_EC2"] == server.url
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}
    env.update({k: v.strip("'") for k, v in exports.items()})
    made = aws(
        env, "create-security-group", "--group-name", "cli-web", "--description", "from the cli"
    )
    assert made.returncode == 0, made.stderr
    group_id = json.loads(made.stdout)["GroupId"]
    ok = aws(
        env,
        "authorize-security-group-ingress",
        "--group-id",
        group_id,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    )
    assert ok.returncode == 0, ok.stderr
    shown = json.loads(aws(env, "describe-security-groups", "--group-names", "cli-web").stdout)
    perm = shown["SecurityGroups"][0]["IpPermissions"][0]
    assert (perm["FromPort"], perm["IpRanges"][0]["CidrIp"]) == (80, "0.0.0.0/0")
    dup = aws(
        env,
        "authorize-security-group-ingress",
        "--group-id",
        group_id,
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "0.0.0.0/0",
    )
    assert dup.returncode != 0 and "InvalidPermission.Duplicate" in dup.stderr
    rules = json.loads(
        aws(
            env, "describe-security-group-rules", "--filters", f"Name=group-id,Values={group_id}"
        ).stdout
    )
    assert len(rules["SecurityGroupRules"]) == 2
    # the CLI's own paginator walks NextToken pages
    for i in range(7):
        assert (
            aws(
                env, "create-security-group", "--group-name", f"pg{i}", "--description", "d"
            ).returncode
            == 0
        )
    paged = json.loads(aws(env, "describe-security-groups", "--page-size", "5").stdout)
    names = [g["GroupName"] for g in paged["SecurityGroups"]]
    assert len(names) == len(set(names)) and {"cli-web", "pg6"} <= set(names)
    gone = aws(env, "delete-security-group", "--group-id", group_id)
    assert gone.returncode == 0, gone.stderr
    missing = aws(env, "delete-security-group", "--group-id", group_id)
    assert "InvalidGroup.NotFound" in missing.stderr
