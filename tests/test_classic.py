"""The classic `ec2-*` commands, run as console scripts against a real server.

The seeds are the spec: 001's `ec2-describe-group` listing, 002's Albert and Mary sessions,
000's `ec2-authorize dbserver -p 3306 -P tcp -u … -o appserver`. Lines are compared column by
column with the seeds' lines, ids, account numbers and addresses aside.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from stockade.classic import core, groups

from conftest import BIN, free_port

# Seed 001, exactly as printed (tabs kept). The copy lost the CIDR addresses after "CIDR".
SEED_001 = [
    "GROUP\tsg-44a9695e\t923486498713\t\tApache\tApache web server\t",
    "PERMISSION\t923486498713\t\tApache\tALLOWS\ttcp\t22\t22\tFROM\tCIDR\tingress",
    "PERMISSION\t923486498713\t\tApache\tALLOWS\ttcp\t80\t80\tFROM\tCIDR\tingress",
]
# Seed 002 (its whitespace was mangled in the copy: compare word by word).
SEED_002_ALBERT_DESCRIBE = (
    "PERMISSION  default  ALLOWS  all   FROM   USER   598916040194   GRPNAME default"
)
SEED_002_ALBERT_AUTHORIZE = [
    "GROUP   default",
    "PERMISSION   default ALLOWS  tcp  22  22  FROM  CIDR  192.168.1.130/32",
]
SEED_002_MARY = {
    "add apache": "GROUP   apache  Mary's Apache group",
    "authorize apache": [
        "GROUP   apache",
        "PERMISSION   apache  ALLOWS  tcp   80    80    FROM    CIDR    0.0.0.0/0",
    ],
    "add appserver": "GROUP   appserver       Mary's app server",
    "authorize appserver": [
        "GROUP   appserver",
        "PERMISSION   appserver  ALLOWS  all   FROM   USER   495219933132   GRPNAME apache",
    ],
}


@dataclass
class Ran:
    rc: int
    out: str
    err: str

    @property
    def rows(self) -> list[list[str]]:
        return [line.split("\t") for line in self.out.splitlines()]


def ec2(env: dict[str, str], *args: str) -> Ran:
    """Run one console script from .venv/bin; never a traceback, whatever happens."""
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def ok(env: dict[str, str], *args: str) -> Ran:
    ran = ec2(env, *args)
    assert ran.rc == 0, f"{args}: {ran.err}"
    assert ran.err == ""
    return ran


def shape(cols: list[str]) -> list[str]:
    """Columns with ids, account numbers and addresses replaced by what they are."""
    out = []
    for c in cols:
        if re.fullmatch(r"sg-[0-9a-f]+", c):
            c = "<sg>"
        elif re.fullmatch(r"vpc-[0-9a-f]+", c):
            c = "<vpc>"
        elif re.fullmatch(r"\d{12}", c):
            c = "<account>"
        elif re.fullmatch(r"[0-9.]+/\d+", c):
            c = "<cidr>"
        out.append(c)
    return out


def perms(ec2c, name: str, key: str = "IpPermissions") -> list[tuple]:
    (g,) = ec2c.describe_security_groups(GroupNames=[name])["SecurityGroups"]
    out = []
    for p in g[key]:
        for r in p["IpRanges"]:
            out.append((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        for pair in p["UserIdGroupPairs"]:
            out.append((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), pair["GroupId"]))
    return sorted(out, key=str)


def gid(ec2c, name: str) -> str:
    return ec2c.describe_security_groups(GroupNames=[name])["SecurityGroups"][0]["GroupId"]


def default_vpc(ec2c) -> str:
    return gid_vpc(ec2c, "default")


def gid_vpc(ec2c, name: str) -> str:
    return ec2c.describe_security_groups(GroupNames=[name])["SecurityGroups"][0]["VpcId"]


def offline_env(**extra: str) -> dict[str, str]:
    """An environment with made-up keys, for runs that fail before any request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EC2_", "AWS_"))}
    env.update(EC2_ACCESS_KEY="AKIAEXAMPLE", EC2_SECRET_KEY="secret", **extra)
    env["EC2_URL"] = env.get("EC2_URL", f"http://127.0.0.1:{free_port()}")
    return env


# --- the seeds ---------------------------------------------------------------------------


def test_seed_001_apache_and_mysql(server, account):
    env, c = server.env(account), server.client(account)
    me = account.account_id

    created = ok(env, "ec2-create-group", "Apache", "-d", "Apache", "web", "server")
    assert created.rows == [["GROUP", gid(c, "Apache"), "Apache", "Apache web server"]]
    for port in ("80", "22"):
        ran = ok(env, "ec2-authorize", "Apache", "-P", "tcp", "-p", port, "-s", "0.0.0.0/0")
        assert ran.rows == [
            ["GROUP", "Apache"],
            ["PERMISSION", "Apache", "ALLOWS", "tcp", port, port, "FROM", "CIDR", "0.0.0.0/0"],
        ]

    rows = ok(env, "ec2-describe-group", "Apache").rows
    group, *permissions = rows
    seed_group = SEED_001[0].split("\t")
    assert len(group) == len(seed_group) == 7
    assert shape(group[:-1]) == shape(seed_group[:-1])  # GROUP sg owner "" Apache description
    assert group[1:3] == [gid(c, "Apache"), me]
    assert group[-1] == gid_vpc(c, "Apache")  # 001's group was EC2-Classic: no VPC there
    # 001's PERMISSION lines with the lost address put back in its column.
    seed_perms = [shape(s.split("\t")[:10]) + ["<cidr>", "ingress"] for s in SEED_001[1:]]
    ingress = [r for r in permissions if r[-1] == "ingress"]
    assert sorted(shape(r) for r in ingress) == sorted(seed_perms)
    assert {(r[1], r[6], r[10]) for r in ingress} == {
        (me, "22", "0.0.0.0/0"),
        (me, "80", "0.0.0.0/0"),
    }
    # A VPC group also has EC2's default outbound rule.
    assert [r for r in permissions if r[-1] != "ingress"] == [
        [
            "PERMISSION",
            me,
            "",
            "Apache",
            "ALLOWS",
            "all",
            "",
            "",
            "TO",
            "CIDR",
            "0.0.0.0/0",
            "egress",
        ]
    ]

    ok(env, "ec2-create-group", "MySQL", "-d", "MySQL", "servers")
    ran = ok(env, "ec2-authorize", "MySQL", "-P", "tcp", "-p", "3306", "-u", me, "-o", "Apache")
    assert ran.rows == [
        ["GROUP", "MySQL"],
        [
            "PERMISSION",
            "MySQL",
            "ALLOWS",
            "tcp",
            "3306",
            "3306",
            "FROM",
            "USER",
            me,
            "GRPNAME",
            "Apache",
        ],
    ]
    rows = ok(env, "ec2-describe-group", "MySQL").rows
    apache = gid(c, "Apache")
    assert [
        "PERMISSION", me, "", "MySQL", "ALLOWS", "tcp", "3306", "3306",
        "FROM", "USER", me, "ID", apache, "GRPNAME", "Apache", "ingress",
    ] in rows  # fmt: skip
    assert perms(c, "MySQL") == [("tcp", 3306, 3306, apache)]

    ran = ok(env, "ec2-revoke", "Apache", "-P", "tcp", "-p", "80", "-s", "0.0.0.0/0")
    assert ran.rows == [
        ["GROUP", "Apache"],
        ["PERMISSION", "Apache", "ALLOWS", "tcp", "80", "80", "FROM", "CIDR", "0.0.0.0/0"],
    ]
    assert perms(c, "Apache") == [("tcp", 22, 22, "0.0.0.0/0")]
    rows = ok(env, "ec2-describe-group", "Apache").rows
    assert [r[6] for r in rows if r[0] == "PERMISSION" and r[-1] == "ingress"] == ["22"]


def test_seed_002_albert(server, account):
    env, c = server.env(account), server.client(account)
    me = account.account_id
    default = gid(c, "default")

    rows = ok(env, "ec2-describe-group", "default").rows
    assert rows[0] == [
        "GROUP",
        default,
        me,
        "",
        "default",
        "default VPC security group",
        default_vpc(c),
    ]
    self_rule = [
        "PERMISSION", me, "", "default", "ALLOWS", "all", "", "",
        "FROM", "USER", me, "ID", default, "GRPNAME", "default", "ingress",
    ]  # fmt: skip
    assert self_rule in rows
    # The seed's words appear in the same order (the old tool had no owner or id columns).
    seed_words = SEED_002_ALBERT_DESCRIBE.replace("598916040194", me).split()
    words = iter("\t".join(self_rule).split())
    assert all(w in words for w in seed_words)

    ran = ok(env, "ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", "192.168.1.130/32")
    assert ran.rows == [line.split() for line in SEED_002_ALBERT_AUTHORIZE]
    assert perms(c, "default") == sorted(
        [("-1", None, None, default), ("tcp", 22, 22, "192.168.1.130/32")], key=str
    )


def test_seed_002_mary(server, account):
    env, c = server.env(account), server.client(account)
    me = account.account_id

    ran = ok(env, "ec2-add-group", "apache", "-d", "Mary's Apache group")
    assert len(ran.rows) == 1
    sg, *rest = ran.rows[0][1:]
    assert sg == gid(c, "apache")
    # The old tool printed no id: otherwise the same columns.
    assert ["GROUP", *rest] == re.split(r"\s{2,}", SEED_002_MARY["add apache"])

    ran = ok(env, "ec2-authorize", "apache", "-P", "tcp", "-p", "80", "-s", "0.0.0.0/0")
    assert ran.rows == [line.split() for line in SEED_002_MARY["authorize apache"]]

    ran = ok(env, "ec2-add-group", "appserver", "-d", "Mary's app server")
    assert ["GROUP", *ran.rows[0][2:]] == re.split(r"\s{2,}", SEED_002_MARY["add appserver"])

    ran = ok(env, "ec2-authorize", "appserver", "-o", "apache", "-u", me)
    seed = [line.replace("495219933132", me) for line in SEED_002_MARY["authorize appserver"]]
    assert [line.split() for line in ran.out.splitlines()] == [line.split() for line in seed]
    assert ran.rows[1] == [
        "PERMISSION", "appserver", "ALLOWS", "all", "", "", "FROM", "USER", me, "GRPNAME", "apache"
    ]  # fmt: skip
    assert perms(c, "appserver") == [("-1", None, None, gid(c, "apache"))]

    ssh = ("apache", "-P", "tcp", "-p", "22", "-s", "192.168.1.130/32")
    ok(env, "ec2-authorize", *ssh)
    assert ("tcp", 22, 22, "192.168.1.130/32") in perms(c, "apache")
    ran = ok(env, "ec2-revoke", *ssh)
    assert ran.rows == [
        ["GROUP", "apache"],
        ["PERMISSION", "apache", "ALLOWS", "tcp", "22", "22", "FROM", "CIDR", "192.168.1.130/32"],
    ]
    assert perms(c, "apache") == [("tcp", 80, 80, "0.0.0.0/0")]


def test_seed_000_group_rule_needs_protocol_with_ports(server, account):
    env, c = server.env(account), server.client(account)
    me = account.account_id
    ok(env, "ec2-create-group", "dbserver", "-d", "databases")
    ok(env, "ec2-create-group", "appserver", "-d", "applications")

    ran = ok(
        env, "ec2-authorize", "dbserver", "-p", "3306", "-P", "tcp", "-u", me, "-o", "appserver"
    )
    assert ran.rows[1] == [
        "PERMISSION", "dbserver", "ALLOWS", "tcp", "3306", "3306",
        "FROM", "USER", me, "GRPNAME", "appserver",
    ]  # fmt: skip
    assert perms(c, "dbserver") == [("tcp", 3306, 3306, gid(c, "appserver"))]

    # "Do not forget adding -P tcp explicitly or it will not work."
    ran = ec2(env, "ec2-authorize", "dbserver", "-p", "5432", "-u", me, "-o", "appserver")
    assert ran.rc == 2
    assert ran.out == ""
    assert "add -P tcp" in ran.err
    assert "usage: ec2-authorize" in ran.err
    assert perms(c, "dbserver") == [("tcp", 3306, 3306, gid(c, "appserver"))]


# --- rules: protocols, ports, directions -------------------------------------------------


def test_icmp_needs_type_and_code(server, account):
    env, c = server.env(account), server.client(account)
    ran = ok(env, "ec2-authorize", "default", "-P", "icmp", "-t", "-1:-1", "-s", "10.0.0.0/8")
    assert ran.rows[1] == [
        "PERMISSION",
        "default",
        "ALLOWS",
        "icmp",
        "-1",
        "-1",
        "FROM",
        "CIDR",
        "10.0.0.0/8",
    ]
    ok(env, "ec2-authorize", "default", "-P", "icmp", "-t", "8:0", "-s", "10.1.0.0/16")
    assert ("icmp", -1, -1, "10.0.0.0/8") in perms(c, "default")
    assert ("icmp", 8, 0, "10.1.0.0/16") in perms(c, "default")

    ran = ec2(env, "ec2-authorize", "default", "-P", "icmp", "-s", "10.2.0.0/16")
    assert ran.rc == 2 and "-t TYPE:CODE" in ran.err
    ran = ec2(env, "ec2-authorize", "default", "-P", "icmp", "-p", "22", "-s", "10.2.0.0/16")
    assert ran.rc == 2 and "-t TYPE:CODE" in ran.err

    ok(env, "ec2-revoke", "default", "-P", "icmp", "-t", "-1:-1", "-s", "10.0.0.0/8")
    assert [p for p in perms(c, "default") if p[0] == "icmp"] == [("icmp", 8, 0, "10.1.0.0/16")]


def test_egress_by_name_and_id(server, account):
    env, c = server.env(account), server.client(account)
    me = account.account_id
    ok(env, "ec2-create-group", "web", "-d", "web")
    ran = ok(env, "ec2-authorize", "web", "--egress", "-P", "tcp", "-p", "443", "-s", "10.0.0.0/8")
    assert ran.rows == [
        ["GROUP", "web"],
        ["PERMISSION", "web", "ALLOWS", "tcp", "443", "443", "TO", "CIDR", "10.0.0.0/8"],
    ]
    assert ("tcp", 443, 443, "10.0.0.0/8") in perms(c, "web", "IpPermissionsEgress")
    assert perms(c, "web") == []
    rows = ok(env, "ec2-describe-group", "web").rows
    assert [
        "PERMISSION", me, "", "web", "ALLOWS", "tcp", "443", "443",
        "TO", "CIDR", "10.0.0.0/8", "egress",
    ] in rows  # fmt: skip

    web = gid(c, "web")
    ok(env, "ec2-revoke", web, "--egress", "-P", "tcp", "-p", "443", "-s", "10.0.0.0/8")
    assert perms(c, "web", "IpPermissionsEgress") == [("-1", None, None, "0.0.0.0/0")]


def test_port_ranges_and_other_protocols(server, account):
    env, c = server.env(account), server.client(account)
    ok(env, "ec2-create-group", "svc", "-d", "services")
    ran = ok(env, "ec2-authorize", "svc", "-P", "tcp", "-p", "8000-8080", "-s", "10.0.0.0/8")
    assert ran.rows[1][3:6] == ["tcp", "8000", "8080"]
    ran = ok(env, "ec2-authorize", "svc", "-P", "udp", "-p", "-1", "-s", "10.0.0.0/8")
    assert ran.rows[1][3:6] == ["udp", "0", "65535"]
    # No -P and a CIDR source: tcp, as the old tools did (`ec2-authorize jupyter -p 22`).
    ran = ok(env, "ec2-authorize", "svc", "-p", "22")
    assert ran.rows[1] == [
        "PERMISSION",
        "svc",
        "ALLOWS",
        "tcp",
        "22",
        "22",
        "FROM",
        "CIDR",
        "0.0.0.0/0",
    ]
    # 001's reader asked about ESP: any IP protocol by number, without ports.
    ran = ok(env, "ec2-authorize", "svc", "-P", "50", "-s", "203.0.113.0/24")
    assert ran.rows[1][3:6] == ["50", "", ""]
    assert perms(c, "svc") == sorted(
        [
            ("tcp", 8000, 8080, "10.0.0.0/8"),
            ("udp", 0, 65535, "10.0.0.0/8"),
            ("tcp", 22, 22, "0.0.0.0/0"),
            ("50", None, None, "203.0.113.0/24"),
        ],
        key=str,
    )
    ran = ec2(env, "ec2-authorize", "svc", "-P", "tcp", "-s", "10.0.0.0/8")
    assert ran.rc == 2 and "-p PORT" in ran.err
    ran = ec2(env, "ec2-authorize", "svc", "-P", "all", "-p", "80", "-s", "10.0.0.0/8")
    assert ran.rc == 2 and "no ports" in ran.err


def test_source_group_of_another_account(server):
    alice, bob = server.account(), server.account()
    ca, cb = server.client(alice), server.client(bob)
    ok(server.env(alice), "ec2-create-group", "lb", "-d", "load balancers")
    lb = gid(ca, "lb")
    env = server.env(bob)
    ok(env, "ec2-create-group", "web", "-d", "web")
    ran = ok(env, "ec2-authorize", "web", "-P", "tcp", "-p", "80", "-u", alice.account_id, "-o", lb)
    assert ran.rows[1][6:] == ["FROM", "USER", alice.account_id, "ID", lb]
    ok(env, "ec2-authorize", "web", "-P", "tcp", "-p", "443", "-u", alice.account_id, "-o", "lb")
    assert perms(cb, "web") == [("tcp", 443, 443, lb), ("tcp", 80, 80, lb)]
    # Another account's group name is not Bob's to see: the column stays empty.
    rows = ok(env, "ec2-describe-group", "web", "--show-empty-fields").rows
    tails = sorted(r[8:] for r in rows if r[-1] == "ingress")
    assert (
        tails == [["FROM", "USER", alice.account_id, "ID", lb, "GRPNAME", "(nil)", "ingress"]] * 2
    )


def test_an_address_for_a_cidr_block_gets_a_hint(server, account):
    env, c = server.env(account), server.client(account)
    before = perms(c, "default")
    for command in ("ec2-authorize", "ec2-revoke"):
        ran = ec2(env, command, "default", "-P", "tcp", "-p", "22", "-s", "172.31.0.5")
        assert ran.rc == 1 and ran.out == ""
        assert ran.err == (
            "Client.InvalidParameterValue: CIDR block 172.31.0.5 is malformed\n"
            f"{command}: did you mean 172.31.0.5/32? (-s takes a CIDR block)\n"
        )
    ran = ec2(env, "ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", "2001:db8::5")
    assert ran.err.endswith("did you mean 2001:db8::5/128? (-s takes a CIDR block)\n")
    ran = ec2(env, "ec2-authorize", "default", "-P", "tcp", "-p", "22", "-s", "10.1.2")
    assert ran.rc == 1 and ran.err.count("\n") == 1  # no hint for what is no address at all
    assert perms(c, "default") == before


def test_a_source_group_not_found_in_another_account_names_it(server, account):
    env = server.env(account)
    other = server.account()
    ok(server.env(other), "ec2-create-group", "apache", "-d", "theirs")
    ok(env, "ec2-create-group", "appserver", "-d", "Mary's app server")
    ran = ec2(env, "ec2-authorize", "appserver", "-o", "apacje", "-u", other.account_id)
    assert ran.rc == 1 and ran.out == ""
    first, hint = ran.err.splitlines()
    assert first.startswith("Client.InvalidGroup.NotFound: The security group 'apacje'")
    assert hint == (
        f"ec2-authorize: the source group 'apacje' was looked for in account {other.account_id}"
        " (-u): check that account number and the group's name with its owner, or give the"
        " group's sg- id"
    )
    # the same name with the right account works (seed 002's Mary)
    ok(env, "ec2-authorize", "appserver", "-o", "apache", "-u", other.account_id)
    # the target group missing is not the source's fault: no hint
    ran = ec2(env, "ec2-authorize", "nosuch", "-o", "apache", "-u", other.account_id)
    assert ran.rc == 1 and len(ran.err.splitlines()) == 1


def test_revoke_of_a_missing_rule_fails(server, account):
    env, c = server.env(account), server.client(account)
    before = perms(c, "default")
    ran = ec2(env, "ec2-revoke", "default", "-P", "tcp", "-p", "25", "-s", "10.9.0.0/16")
    assert ran.rc == 1
    assert ran.out == ""
    assert "no such rule" in ran.err
    assert "PERMISSION\tdefault\tALLOWS\ttcp\t25\t25\tFROM\tCIDR\t10.9.0.0/16" in ran.err
    assert perms(c, "default") == before


def test_duplicate_rule_is_a_client_error(server, account):
    env = server.env(account)
    rule = ("default", "-P", "tcp", "-p", "22", "-s", "192.168.1.130/32")
    ok(env, "ec2-authorize", *rule)
    ran = ec2(env, "ec2auth", *rule)
    assert ran.rc == 1
    assert ran.out == ""
    assert ran.err.startswith("Client.InvalidPermission.Duplicate: ")


# --- groups, regions, options ------------------------------------------------------------


def test_create_describe_delete_with_aliases(server, account):
    env, c = server.env(account), server.client(account)
    # The description may come first, quoted, with the group after it.
    ran = ok(env, "ec2addgrp", "-d", "Potato Storage", "potato")
    assert ran.rows == [["GROUP", gid(c, "potato"), "potato", "Potato Storage"]]
    potato = gid(c, "potato")
    by_id = ok(env, "ec2dgrp", potato).rows
    assert by_id[0][:6] == ["GROUP", potato, account.account_id, "", "potato", "Potato Storage"]
    filtered = ok(env, "ec2-describe-group", "-F", "description=Potato*").rows
    assert [r[4] for r in filtered if r[0] == "GROUP"] == ["potato"]
    everything = ok(env, "ec2-describe-group").rows
    assert sorted(r[4] for r in everything if r[0] == "GROUP") == ["default", "potato"]

    assert ok(env, "ec2delgrp", "potato").rows == [["RETURN", "true"]]
    assert "potato" not in [g["GroupName"] for g in c.describe_security_groups()["SecurityGroups"]]
    ran = ec2(env, "ec2-delete-group", "default")
    assert ran.rc == 1 and ran.err.startswith("Client.CannotDelete: ")


def test_create_group_in_a_vpc(server, account):
    env, c = server.env(account), server.client(account)
    vpc = c.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    ran = ok(env, "ec2-create-group", "inner", "-d", "in a vpc", "--vpc", vpc)
    sg = ran.rows[0][1]
    (g,) = c.describe_security_groups(GroupIds=[sg])["SecurityGroups"]
    assert (g["GroupName"], g["VpcId"]) == ("inner", vpc)
    assert ok(env, "ec2-describe-group", sg).rows[0][-1] == vpc


def test_unknown_group(server, account):
    env, c = server.env(account), server.client(account)
    vpc = default_vpc(c)
    for args in (
        ("ec2-describe-group", "nosuch"),
        ("ec2-authorize", "nosuch", "-P", "tcp", "-p", "22", "-s", "10.0.0.0/8"),
        ("ec2-revoke", "nosuch", "-P", "tcp", "-p", "22", "-s", "10.0.0.0/8"),
        ("ec2-delete-group", "nosuch"),
    ):
        ran = ec2(env, *args)
        assert ran.rc == 1, args
        assert ran.out == ""
        assert ran.err == (
            "Client.InvalidGroup.NotFound: "
            f"The security group 'nosuch' does not exist in default VPC '{vpc}'\n"
        )


def test_describe_regions(server, account):
    env = server.env(account)
    rows = ok(env, "ec2-describe-regions").rows
    assert ["REGION", "us-east-1", server.url] in rows
    assert all(len(r) == 3 and r[0] == "REGION" for r in rows)
    assert ok(env, "ec2dre", "eu-west-1").rows == [["REGION", "eu-west-1", server.url]]


def test_headers_and_empty_fields(server, account):
    env = server.env(account)
    rows = ok(env, "ec2-describe-group", "-H", "default").rows
    group_header, perm_header, group, *permissions = rows
    assert group_header[0] == perm_header[0] == "Type"
    assert group_header[1:3] == ["GroupId", "OwnerId"]
    assert len(group_header) == len(group) == 7
    cidr_rule = next(r for r in permissions if r[9] == "CIDR")
    assert len(perm_header) == len(cidr_rule) == 12
    assert not any(r[0] == "Type" for r in ok(env, "ec2-describe-group", "default").rows)

    rows = ok(env, "ec2-describe-group", "--show-empty-fields", "default").rows
    assert all("" not in r for r in rows)
    assert rows[0][3] == "(nil)"
    egress = next(r for r in rows if r[-1] == "egress")
    assert egress[5:8] == ["all", "(nil)", "(nil)"]


def test_verbose_prints_request_and_response(server, account):
    env = server.env(account)
    quiet = ok(env, "ec2-describe-group", "default")
    ran = ec2(env, "ec2-describe-group", "-v", "default")
    assert ran.rc == 0
    assert ran.out == quiet.out
    assert "Action=DescribeSecurityGroups" in ran.err
    assert "GroupName.1=default" in ran.err
    assert "<DescribeSecurityGroupsResponse" in ran.err
    assert account.secret_access_key not in ran.err


def test_credentials_url_and_region_sources(server, account):
    base = {k: v for k, v in server.env(account).items() if not k.startswith(("EC2_", "AWS_"))}
    key, secret = account.access_key_id, account.secret_access_key
    for env, flags in (
        ({**base, "EC2_URL": server.url}, ["-O", key, "-W", secret]),
        ({**base, "EC2_URL": server.url, "AWS_ACCESS_KEY": key, "AWS_SECRET_KEY": secret}, []),
        ({**base, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}, ["-U", server.url]),
    ):
        ran = ok(env, "ec2-describe-group", *flags, "default")
        assert ran.rows[0][2] == account.account_id

    env = server.env(account)
    ok(env, "ec2-create-group", "--region", "eu-west-1", "europe", "-d", "in Europe")
    ok({**env, "EC2_REGION": "eu-west-1"}, "ec2-create-group", "europe2", "-d", "also")
    eu = server.client(account, region="eu-west-1")
    names = {g["GroupName"] for g in eu.describe_security_groups()["SecurityGroups"]}
    assert names == {"default", "europe", "europe2"}
    us = server.client(account)
    assert "europe" not in {g["GroupName"] for g in us.describe_security_groups()["SecurityGroups"]}
    ran = ec2({**env, "AWS_DEFAULT_REGION": "eu-west-1"}, "ec2-describe-group", "europe")
    assert ran.rc == 0 and ran.rows[0][4] == "europe"


# --- failing well, without a server ------------------------------------------------------


def test_no_server_at_ec2_url():
    url = f"http://127.0.0.1:{free_port()}"
    ran = ec2(offline_env(EC2_URL=url), "ec2-describe-group")
    assert ran.rc == 1
    assert ran.out == ""
    assert url in ran.err
    assert "EC2_URL" in ran.err and "stockade serve" in ran.err


def test_missing_credentials():
    env = offline_env()
    del env["EC2_ACCESS_KEY"]
    ran = ec2(env, "ec2-describe-group")
    assert ran.rc == 1
    assert "EC2_ACCESS_KEY" in ran.err and "stockade env" in ran.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["ec2-describe-group", "--bogus"], "unrecognized arguments: --bogus"),
        (["ec2-authorize"], "required: GROUP"),
        (["ec2-create-group", "apache"], "-d/--description"),
        (["ec2-authorize", "g", "-P", "tcp", "-p", "1x"], "bad port range"),
        (["ec2-authorize", "g", "-P", "nope", "-p", "1"], "unknown protocol"),
        (["ec2-authorize", "g", "-u", "123456789012", "-p", "22"], "add -o GROUP"),
        (["ec2-revoke", "g", "-o", "a", "-t", "8:0"], "add -P icmp"),
        (["ec2-describe-regions", "-F", "novalue"], "NAME=VALUE"),
    ],
)
def test_bad_arguments_print_usage(args, message):
    ran = ec2(offline_env(), *args)
    assert ran.rc == 2
    assert ran.out == ""
    assert f"usage: {args[0]}" in ran.err
    assert message in ran.err


def test_help():
    ran = ec2(offline_env(), "ec2-authorize", "--help")
    assert ran.rc == 0
    for flag in ("-P", "--port-range", "--icmp-type-code", "--source-group-user", "--egress"):
        assert flag in ran.out
    assert "usage: ec2auth" in ec2(offline_env(), "ec2auth", "-h").out


# --- the pieces, without a server --------------------------------------------------------


def rule(*argv: str) -> groups.Rule:
    parser = core.parser_for(groups.AUTHORIZE, "ec2-authorize")
    return groups.rule_from(parser.parse_intermixed_args(core.attach_dash_values(parser, argv)))


def test_rule_defaults():
    assert rule("g", "-p", "22") == groups.Rule("tcp", 22, 22, ("0.0.0.0/0",), ())
    assert rule("g", "-o", "web", "-u", "1234-5678-9012") == groups.Rule(
        "-1", None, None, (), (("123456789012", "web"),)
    )
    assert rule("g", "-t", "-1").protocol == "icmp"
    assert rule("g", "-P", "icmp", "-t", "3").from_port == 3
    two = rule("g", "-P", "tcp", "-p", "80", "-o", "a", "-o", "b", "-u", "111122223333")
    assert two.groups == (("111122223333", "a"), ("111122223333", "b"))
    assert two.permission()["UserIdGroupPairs"] == [
        {"GroupName": "a", "UserId": "111122223333"},
        {"GroupName": "b", "UserId": "111122223333"},
    ]
    v6 = rule("g", "-P", "tcp", "-p", "80", "-s", "::/0", "-s", "10.0.0.0/8").permission()
    assert v6["Ipv6Ranges"] == [{"CidrIpv6": "::/0"}]
    assert v6["IpRanges"] == [{"CidrIp": "10.0.0.0/8"}]
    with pytest.raises(core.UsageError, match="add -P tcp"):
        rule("g", "-p", "3306", "-o", "appserver")
    with pytest.raises(core.UsageError, match="one -u for each -o"):
        rule("g", "-o", "a", "-o", "b", "-o", "c", "-u", "1", "-u", "2")
