"""The classic instance, Elastic IP, key-pair and image commands, run as console scripts
against a real server and checked against boto3.

The seeds are the spec: 002's `ec2-run-instances ami-eca54085` (Albert) and `ec2run
ami-fba54092 -n 7 -g apache` / `ec2din` (Mary), 000's `ADDRESS xx.xx.xx.xx` and
`ec2-associate-address -i i-yyyyyy xx.xx.xx.xx`. The seeds' copies collapsed runs of
whitespace, so their empty columns are gone: each seed word is compared with the column the
full ec2-api-tools layout puts it in, ids, account numbers, dates and addresses aside.
"""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest

from stockade.classic import instances as classic_instances
from test_classic import ec2, offline_env, ok

from conftest import wait_until

SEED_002_ALBERT_RUN = [
    "RESERVATION r-a034c7c9 924417782495 default",
    "INSTANCE i-cfd732a6 ami-eca54085 pending 0 m1.small 2007-07-11T16:40:44+0000  us-east-1c",
]
SEED_002_MARY_RUN_FIRST = [
    "RESERVATION r-0592776c 598916040194 default",
    "INSTANCE i-cfd732a6 ami-fba54092 pending 0 m1.small 2007-07-11T16:40:44+0000  us-east-1c",
]
SEED_002_MARY_DIN = [
    "RESERVATION     r-0592776c      598916040194",
    # The copy also broke the INSTANCE line in two; joined again here.
    "INSTANCE        i-cfd732a6      ami-fba54092       ec2-67-202-51-245.compute-1.amazonaws.com"
    "       running 0 m1.small 2007-07-11T16:40:44+0000",
]
SEED_000_ALLOCATE = "ADDRESS\txx.xx.xx.xx"

# Where the seed's words sit in the full INSTANCE line (0 is the word INSTANCE):
# id 1, AMI 2, public DNS 3, private DNS 4, state 5, key 6, launch index 7, product codes 8,
# type 9, launch time 10, zone 11. A pending instance's seed line has no DNS names.
PENDING_SEED_COLUMNS = [0, 1, 2, 5, 7, 9, 10, 11]
DESCRIBED_SEED_COLUMNS = [0, 1, 2, 3, 5, 7, 9, 10]
INSTANCE_WIDTH = 1 + len(classic_instances.INSTANCE_COLUMNS)  # 32

MISSING_I = "i-0123456789abcdef0"


def shape(word: str) -> str:
    """A column with ids, account numbers, dates, zones and addresses replaced by a kind."""
    for pattern, kind in (
        (r"r-[0-9a-f]+", "<reservation>"),
        (r"i-[0-9a-f]+", "<instance>"),
        (r"\d{12}", "<account>"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", "<time>"),
        (r"us-east-1[a-f]", "<zone>"),
        (r"ec2-\d+-\d+-\d+-\d+\.compute-1\.[a-z.]+", "<public-dns>"),
        (r"ip-\d+-\d+-\d+-\d+\.ec2\.internal", "<private-dns>"),
        (r"(?:\d+\.){3}\d+|xx\.xx\.xx\.xx", "<ip>"),
        (r"eipalloc-[0-9a-f]+", "<allocation>"),
    ):
        if re.fullmatch(pattern, word):
            return kind
    return word


def seed_matches(row: list[str], seed: str, columns: list[int]) -> None:
    """The seed line's words, in its columns of ``row``; the row is a full INSTANCE line."""
    words = seed.split()
    assert len(words) == len(columns)
    assert [shape(row[c]) for c in columns] == [shape(w) for w in words]


def instance_rows(ran) -> list[list[str]]:
    rows = [r for r in ran.rows if r[0] == "INSTANCE"]
    assert all(len(r) == INSTANCE_WIDTH for r in rows)
    return rows


def described(c, *ids: str) -> list[dict]:
    reservations = c.describe_instances(InstanceIds=list(ids))["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def one(c, instance_id: str) -> dict:
    (inst,) = described(c, instance_id)
    return inst


def seed_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


def launch(env, *args: str) -> list[str]:
    """ec2run; the instance ids it printed."""
    return [r[1] for r in instance_rows(ok(env, "ec2run", *args))]


# --- seed 002 ----------------------------------------------------------------------------


def test_seed_002_albert_launches_his_favourite_ami(server, account):
    env, c = server.env(account), server.client(account)
    ran = ok(env, "ec2-run-instances", "ami-eca54085")
    reservation, instance = ran.rows
    # RESERVATION r-… <owner> default
    assert reservation == ["RESERVATION", reservation[1], account.account_id, "default"]
    assert [shape(w) for w in reservation] == [shape(w) for w in SEED_002_ALBERT_RUN[0].split()]
    # INSTANCE: the seed's words in their columns; its empty columns empty here too (the
    # key name, the product codes), the DNS columns are names Stockade gives at launch.
    assert len(instance) == INSTANCE_WIDTH
    seed_matches(instance, SEED_002_ALBERT_RUN[1], PENDING_SEED_COLUMNS)
    assert instance[5] == "pending"
    assert instance[6] == instance[8] == ""
    assert shape(instance[3]) in ("", "<public-dns>")
    assert shape(instance[4]) in ("", "<private-dns>")

    inst = one(c, instance[1])
    (res,) = c.describe_instances(InstanceIds=[instance[1]])["Reservations"]
    assert res["ReservationId"] == reservation[1]
    assert inst["ImageId"] == "ami-eca54085"
    assert [g["GroupName"] for g in inst["SecurityGroups"]] == ["default"]
    assert instance[9] == inst["InstanceType"] == "m1.small"
    assert instance[10] == seed_time(inst["LaunchTime"])
    assert instance[11] == inst["Placement"]["AvailabilityZone"]
    assert instance[16:20] == [
        inst["PublicIpAddress"],
        inst["PrivateIpAddress"],
        inst["VpcId"],
        inst["SubnetId"],
    ]
    assert instance[28] == inst["SecurityGroups"][0]["GroupId"]


def test_seed_002_mary_web_and_app_tiers(server, account):
    env, c = server.env(account), server.client(account)
    me = account.account_id
    ok(env, "ec2-add-group", "apache", "-d", "Mary's Apache group")

    ran = ok(env, "ec2run", "ami-fba54092", "-n", "7", "-g", "apache")
    reservation, *rest = ran.rows
    # The seed prints `default` here although Mary launched into apache (its text was
    # copied from Albert's launch); the groups column names the groups asked for.
    assert reservation == ["RESERVATION", reservation[1], me, "apache"]
    assert [shape(w) for w in reservation[:3]] == [
        shape(w) for w in SEED_002_MARY_RUN_FIRST[0].split()[:3]
    ]
    rows = instance_rows(ran)
    assert rows == rest
    assert len(rows) == 7
    ids = [r[1] for r in rows]
    assert len(set(ids)) == 7
    assert [r[7] for r in rows] == [str(n) for n in range(7)]  # AMI launch indexes
    # The seed repeats the first line's launch index 0 on all seven (its lines are copies of
    # one another); EC2 numbers the instances of a launch 0, 1, 2, ...
    for n, row in enumerate(rows):
        seed = SEED_002_MARY_RUN_FIRST[1].replace(" pending 0 ", f" pending {n} ")
        seed_matches(row, seed, PENDING_SEED_COLUMNS)
    insts = described(c, *ids)
    assert {i["InstanceId"] for i in insts} == set(ids)
    assert all([g["GroupName"] for g in i["SecurityGroups"]] == ["apache"] for i in insts)

    din = ok(env, "ec2din", ids[0])
    assert len(din.rows) == 2
    res_line, inst_line = din.rows
    # Seed 002's ec2din RESERVATION line: id and owner, no groups column.
    assert res_line == ["RESERVATION", reservation[1], me]
    assert [shape(w) for w in res_line] == [shape(w) for w in SEED_002_MARY_DIN[0].split()]
    assert len(inst_line) == INSTANCE_WIDTH
    seed_matches(inst_line, SEED_002_MARY_DIN[1], DESCRIBED_SEED_COLUMNS)
    first = one(c, ids[0])
    assert inst_line[5] == first["State"]["Name"] == "running"
    assert inst_line[3] == first["PublicDnsName"] != ""
    assert inst_line[4] == first["PrivateDnsName"]

    ok(env, "ec2-add-group", "appserver", "-d", "Mary's app server")
    app = launch(env, "ami-e3a5408a", "-n", "20", "-g", "appserver")
    assert len(set(app)) == 20
    assert {i["InstanceId"] for i in described(c, *app)} == set(app)

    # 27 of the default limit of 32 are taken: 6 more is too many and launches nothing;
    # MIN-MAX launches as many as fit.
    ran = ec2(env, "ec2run", "ami-f1a54098", "-n", "6")
    assert ran.rc == 1 and ran.out == ""
    assert ran.err.startswith("Client.InstanceLimitExceeded: ")
    db = launch(env, "ami-f1a54098", "-n", "2-10")
    assert len(db) == 5
    running = c.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
    assert sum(len(r["Instances"]) for r in running["Reservations"]) == 32


# --- seed 000: Elastic IPs ---------------------------------------------------------------


def test_seed_000_elastic_ip_survives_stop_and_start(server, account):
    env, c = server.env(account), server.client(account)
    (iid,) = launch(env, "ami-eca54085")
    pool_ip = one(c, iid)["PublicIpAddress"]

    ran = ok(env, "ec2-allocate-address")
    (row,) = ran.rows
    assert [shape(w) for w in row[:2]] == [shape(w) for w in SEED_000_ALLOCATE.split("\t")]
    ip, alloc = row[1], row[4]
    assert row == ["ADDRESS", ip, "", "vpc", alloc]
    (addr,) = c.describe_addresses()["Addresses"]
    assert (addr["PublicIp"], addr["AllocationId"]) == (ip, alloc)
    assert ip != pool_ip

    # `ec2-associate-address -i i-yyyyyy xx.xx.xx.xx`
    ran = ok(env, "ec2-associate-address", "-i", iid, ip)
    (row,) = ran.rows
    (addr,) = c.describe_addresses()["Addresses"]
    assert row == ["ADDRESS", ip, iid, alloc, addr["AssociationId"]]
    assert addr["InstanceId"] == iid
    assert one(c, iid)["PublicIpAddress"] == ip
    assert ok(env, "ec2daddr").rows == [
        ["ADDRESS", ip, iid, "vpc", alloc, addr["AssociationId"],
         addr["NetworkInterfaceId"], addr["PrivateIpAddress"]],
    ]  # fmt: skip

    assert ok(env, "ec2-stop-instances", iid).rows == [["INSTANCE", iid, "running", "stopping"]]
    wait_until(lambda: one(c, iid)["State"]["Name"] == "stopped", what="the instance to stop")
    assert c.describe_addresses()["Addresses"][0]["InstanceId"] == iid
    assert ok(env, "ec2-start-instances", iid).rows == [["INSTANCE", iid, "stopped", "pending"]]
    wait_until(lambda: one(c, iid)["State"]["Name"] == "running", what="the instance to run")
    inst = one(c, iid)
    assert inst["PublicIpAddress"] == ip
    (din,) = instance_rows(ok(env, "ec2din", iid))
    assert din[16] == ip
    assert din[3] == inst["PublicDnsName"] and ip.replace(".", "-") in din[3]

    assert ok(env, "ec2-disassociate-address", ip).rows == [["ADDRESS", ip]]
    (addr,) = c.describe_addresses()["Addresses"]
    assert "AssociationId" not in addr and "InstanceId" not in addr
    assert one(c, iid)["PublicIpAddress"] != ip

    assert ok(env, "ec2-release-address", ip).rows == [["ADDRESS", ip]]
    assert c.describe_addresses()["Addresses"] == []
    assert ok(env, "ec2daddr").rows == []


def test_addresses_by_id_interface_and_reassociation(server, account):
    env, c = server.env(account), server.client(account)
    first, second = launch(env, "ami-eca54085", "-n", "2")
    ran = ok(env, "ec2allocaddr", "-d", "vpc")
    ip, alloc = ran.rows[0][1], ran.rows[0][4]

    ran = ok(env, "ec2assocaddr", "-i", first, "-a", alloc)
    assoc = ran.rows[0][4]
    assert ran.rows == [["ADDRESS", ip, first, alloc, assoc]]
    assert one(c, first)["PublicIpAddress"] == ip

    # Already associated: moving it needs --allow-reassociation.
    eni = one(c, second)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ran = ec2(env, "ec2assocaddr", "-n", eni, alloc)
    assert ran.rc == 1 and ran.err.startswith("Client.Resource.AlreadyAssociated: ")
    assert one(c, first)["PublicIpAddress"] == ip
    ran = ok(env, "ec2assocaddr", "-n", eni, alloc, "--allow-reassociation")
    moved = ran.rows[0][4]
    assert ran.rows == [["ADDRESS", ip, second, alloc, moved]]
    assert one(c, second)["PublicIpAddress"] == ip
    assert one(c, first)["PublicIpAddress"] != ip

    filtered = ok(env, "ec2daddr", "-F", f"instance-id={second}").rows
    assert [r[1:5] for r in filtered] == [[ip, second, "vpc", alloc]]
    assert ok(env, "ec2daddr", alloc).rows == filtered
    assert ok(env, "ec2disaddr", "-a", moved).rows == [["ADDRESS", "", moved]]
    assert "AssociationId" not in c.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    assert ok(env, "ec2reladdr", "-a", alloc).rows == [["ADDRESS", "", alloc]]
    assert c.describe_addresses()["Addresses"] == []

    ran = ec2(env, "ec2-release-address", "198.51.100.77")
    assert ran.rc == 1 and ran.err.startswith("Client.InvalidAddress.NotFound: ")


# --- state changes -----------------------------------------------------------------------


def test_terminate_stop_start_reboot(server, account):
    env, c = server.env(account), server.client(account)
    a, b = launch(env, "ami-eca54085", "-n", "2")

    assert ok(env, "ec2reboot", a).rows == [["INSTANCE", a, "running", "running"]]
    assert one(c, a)["State"]["Name"] == "running"

    assert ok(env, "ec2stop", "--force", b).rows == [["INSTANCE", b, "running", "stopping"]]
    wait_until(lambda: one(c, b)["State"]["Name"] == "stopped", what="the instance to stop")
    ran = ec2(env, "ec2reboot", b)
    assert ran.rc == 1 and ran.out == ""
    assert ran.err.startswith("Client.IncorrectInstanceState: ")

    ran = ok(env, "ec2kill", a, b)
    assert ran.rows == [
        ["INSTANCE", a, "running", "shutting-down"],
        ["INSTANCE", b, "stopped", "shutting-down"],
    ]
    wait_until(
        lambda: {i["State"]["Name"] for i in described(c, a, b)} == {"terminated"},
        what="the instances to terminate",
    )
    # Terminating again changes nothing; starting a terminated instance is refused.
    assert ok(env, "ec2-terminate-instances", a).rows == [
        ["INSTANCE", a, "terminated", "terminated"]
    ]
    ran = ec2(env, "ec2start", a)
    assert ran.rc == 1 and ran.err.startswith("Client.IncorrectInstanceState: ")


@pytest.mark.parametrize(
    "command", ["ec2kill", "ec2stop", "ec2start", "ec2reboot", "ec2-describe-instances"]
)
def test_unknown_instance(server, account, command):
    ran = ec2(server.env(account), command, MISSING_I)
    assert ran.rc == 1
    assert ran.out == ""
    assert ran.err == (
        f"Client.InvalidInstanceID.NotFound: The instance ID '{MISSING_I}' does not exist\n"
    )


# --- ec2-run-instances options -----------------------------------------------------------


def test_instance_count_range(server, account):
    env, c = server.env(account), server.client(account)
    ran = ok(env, "ec2run", "ami-eca54085", "-n", "2-3")
    ids = [r[1] for r in instance_rows(ran)]
    assert len(ids) == 3
    (res,) = c.describe_instances(InstanceIds=ids)["Reservations"]
    assert res["ReservationId"] == ran.rows[0][1]
    assert sorted(i["InstanceId"] for i in res["Instances"]) == sorted(ids)


def test_user_data_from_a_file_and_inline(server, account, tmp_path):
    env, c = server.env(account), server.client(account)
    script = b"#!/bin/sh\necho 'hello from user data'\n\xff\x00 binary too\n"
    path = tmp_path / "boot.sh"
    path.write_bytes(script)
    (from_file,) = launch(env, "ami-eca54085", "-f", str(path))
    (inline,) = launch(env, "ami-eca54085", "-d", "role=web")
    for iid, sent in ((from_file, script), (inline, b"role=web")):
        got = c.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        assert base64.b64decode(got["UserData"]["Value"]) == sent

    ran = ec2(env, "ec2run", "ami-eca54085", "-f", str(tmp_path / "missing"))
    assert ran.rc == 1 and ran.out == ""
    assert "cannot read the user data file" in ran.err


def test_run_options(server, account):
    env, c = server.env(account), server.client(account)
    ok(env, "ec2-add-group", "web", "-d", "web servers")
    default = c.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
    web = c.describe_security_groups(GroupNames=["web"])["SecurityGroups"][0]["GroupId"]
    (subnet,) = c.describe_subnets(
        Filters=[
            {"Name": "default-for-az", "Values": ["true"]},
            {"Name": "availability-zone", "Values": ["us-east-1b"]},
        ]
    )["Subnets"]
    base = subnet["CidrBlock"].split("/")[0].rsplit(".", 1)[0]
    private_ip = f"{base}.200"
    ok(env, "ec2addkey", "mary")

    args = (
        "ami-fba54092", "-g", "web", "-g", default, "-k", "mary", "-t", "m1.large",
        "-z", "us-east-1b", "-s", subnet["SubnetId"], "--private-ip-address", private_ip,
        "--client-token", "mary-web-1",
    )  # fmt: skip
    ran = ok(env, "ec2-run-instance", *args)
    reservation, row = ran.rows
    assert set(reservation[3].split(",")) == {"web", "default"}
    inst = one(c, row[1])
    assert row[6] == inst["KeyName"] == "mary"
    assert row[9] == inst["InstanceType"] == "m1.large"
    assert row[11] == inst["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert row[17] == inst["PrivateIpAddress"] == private_ip
    assert row[19] == inst["SubnetId"] == subnet["SubnetId"]
    assert set(row[28].split(",")) == {g["GroupId"] for g in inst["SecurityGroups"]}
    assert {g["GroupId"] for g in inst["SecurityGroups"]} == {web, default}
    assert row[27] == inst["ClientToken"] == "mary-web-1"

    # The same client token again: the same reservation, nothing new launched.
    again = ok(env, "ec2run", *args)
    assert again.rows[0][1] == reservation[1]
    assert [r[1] for r in instance_rows(again)] == [row[1]]
    assert len(c.describe_instances()["Reservations"]) == 1


@pytest.mark.parametrize(
    "args, code",
    [
        (["ami-12345678"], "InvalidAMIID.NotFound"),
        (["ami-eca54085", "-g", "nosuch"], "InvalidGroup.NotFound"),
        (["ami-eca54085", "-k", "nosuch"], "InvalidKeyPair.NotFound"),
        (["ami-eca54085", "-t", "m9.huge"], "InvalidParameterValue"),
    ],
)
def test_run_errors(server, account, args, code):
    env, c = server.env(account), server.client(account)
    ran = ec2(env, "ec2run", *args)
    assert ran.rc == 1
    assert ran.out == ""
    assert ran.err.startswith(f"Client.{code}: ")
    assert c.describe_instances()["Reservations"] == []


# --- ec2-describe-instances --------------------------------------------------------------


def test_describe_all_filters_tags_and_headers(server, account):
    env, c = server.env(account), server.client(account)
    a, b = launch(env, "ami-eca54085", "-n", "2")
    (d,) = launch(env, "ami-fba54092")
    c.create_tags(
        Resources=[a], Tags=[{"Key": "Name", "Value": "web"}, {"Key": "tier", "Value": "1"}]
    )

    rows = ok(env, "ec2-describe-instances").rows
    assert [r[0] for r in rows] == [
        "RESERVATION", "INSTANCE", "TAG", "TAG", "INSTANCE", "RESERVATION", "INSTANCE",
    ]  # fmt: skip
    assert sorted(r[1] for r in rows if r[0] == "INSTANCE") == sorted([a, b, d])
    assert [r for r in rows if r[0] == "TAG"] == [
        ["TAG", "instance", a, "Name", "web"],
        ["TAG", "instance", a, "tier", "1"],
    ]

    tagged = ok(env, "ec2din", "-F", "tag:Name=web").rows
    assert [r[1] for r in tagged if r[0] == "INSTANCE"] == [a]
    by_image = ok(env, "ec2din", "-F", "image-id=ami-fba54092").rows
    assert [r[1] for r in by_image if r[0] == "INSTANCE"] == [d]
    either = ok(env, "ec2din", "-F", f"instance-id={b}", "-F", f"instance-id={d}").rows
    assert sorted(r[1] for r in either if r[0] == "INSTANCE") == sorted([b, d])

    headed = ok(env, "ec2din", "-H", d).rows
    headers = [r for r in headed if r[0] == "Type"]
    assert [h[1] for h in headers] == ["ReservationId", "InstanceId", "ResourceType"]
    assert len(headers[0]) == len(headed[-2]) == 3
    assert len(headers[1]) == len(headed[-1]) == INSTANCE_WIDTH

    nil = ok(env, "ec2din", "--show-empty-fields", d).rows[1]
    assert "" not in nil and nil[6] == "(nil)"

    assert ok(env, "ec2din", "-F", "instance-state-name=stopped").rows == []


# --- key pairs ---------------------------------------------------------------------------


def test_keypairs(server, account):
    env, c = server.env(account), server.client(account)
    ran = ok(env, "ec2addkey", "gsg-keypair")
    head, *key = ran.out.splitlines()
    (pair,) = c.describe_key_pairs()["KeyPairs"]
    assert head.split("\t") == ["KEYPAIR", "gsg-keypair", pair["KeyFingerprint"]]
    assert key[0].startswith("-----BEGIN") and key[0].endswith("PRIVATE KEY-----")
    assert key[-1].startswith("-----END") and len(key) > 3

    ran = ec2(env, "ec2-add-keypair", "gsg-keypair")
    assert ran.rc == 1 and ran.out == ""
    assert ran.err.startswith("Client.InvalidKeyPair.Duplicate: ")

    ok(env, "ec2-create-keypair", "other", "--type", "ed25519")
    assert ok(env, "ec2dkey").rows == [
        ["KEYPAIR", k["KeyName"], k["KeyFingerprint"]]
        for k in sorted(c.describe_key_pairs()["KeyPairs"], key=lambda k: k["KeyName"])
    ]
    assert ok(env, "ec2-describe-keypairs", "other").rows[0][1] == "other"

    (iid,) = launch(env, "ami-eca54085", "-k", "gsg-keypair")
    assert one(c, iid)["KeyName"] == "gsg-keypair"

    assert ok(env, "ec2delkey", "gsg-keypair").rows == [["KEYPAIR", "gsg-keypair"]]
    assert [k["KeyName"] for k in c.describe_key_pairs()["KeyPairs"]] == ["other"]
    ran = ec2(env, "ec2dkey", "gsg-keypair")
    assert ran.rc == 1 and ran.err.startswith("Client.InvalidKeyPair.NotFound: ")


# --- images ------------------------------------------------------------------------------


def test_describe_images(server, account):
    env, c = server.env(account), server.client(account)
    rows = ok(env, "ec2dim").rows
    images = {i["ImageId"]: i for i in c.describe_images()["Images"]}
    assert sorted(r[1] for r in rows) == sorted(images)
    assert all(len(r) == 15 and r[0] == "IMAGE" for r in rows)
    (albert,) = [r for r in rows if r[1] == "ami-eca54085"]
    img = images["ami-eca54085"]
    assert albert == [
        "IMAGE", "ami-eca54085", img["ImageLocation"], img["ImageOwnerAlias"], "available",
        "public", "", img["Architecture"], "machine", "", "", "", "ebs",
        img["VirtualizationType"], img["Hypervisor"],
    ]  # fmt: skip

    assert [r[1] for r in ok(env, "ec2-describe-images", "ami-fba54092").rows] == ["ami-fba54092"]
    assert ok(env, "ec2dim", "-o", "self").rows == []
    assert len(ok(env, "ec2dim", "-o", "amazon").rows) == len(images)
    named = ok(env, "ec2dim", "-F", "name=app-server").rows
    assert [r[1] for r in named] == ["ami-e3a5408a"]
    ran = ec2(env, "ec2dim", "ami-12345678")
    assert ran.rc == 1 and ran.err.startswith("Client.InvalidAMIID.NotFound: ")


# --- bad arguments, without a server -----------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["ec2-run-instances", "ami-eca54085", "--bogus"], "unrecognized arguments: --bogus"),
        (["ec2run"], "required: AMI"),
        (["ec2run", "ami-eca54085", "-n", "0"], "at least 1"),
        (["ec2run", "ami-eca54085", "-n", "3-2"], "MIN is at most MAX"),
        (["ec2run", "ami-eca54085", "-n", "many"], "COUNT or MIN-MAX"),
        (["ec2run", "ami-eca54085", "-d", "x", "-f", "y"], "not allowed with"),
        (["ec2kill"], "required: INSTANCE"),
        (["ec2stop", "i-1", "--hard"], "unrecognized arguments: --hard"),
        (["ec2din", "-F", "novalue"], "NAME=VALUE"),
        (["ec2-associate-address", "198.51.100.1"], "-i INSTANCE"),
        (["ec2assocaddr", "-i", "i-1", "-n", "eni-1", "198.51.100.1"], "-i INSTANCE"),
        (["ec2assocaddr", "-i", "i-1", "198.51.100.1", "-a", "eipalloc-1"], "not both"),
        (["ec2-release-address"], "which address"),
        (["ec2disaddr"], "which address"),
        (["ec2allocaddr", "-d", "classic"], "invalid choice"),
        (["ec2addkey"], "required: NAME"),
        (["ec2dim", "-a", "ami-eca54085"], "-a/--all"),
    ],
)
def test_bad_arguments_print_usage(args, message):
    ran = ec2(offline_env(), *args)
    assert ran.rc == 2
    assert ran.out == ""
    assert f"usage: {args[0]}" in ran.err
    assert message in ran.err


def test_help_names_the_flags():
    ran = ec2(offline_env(), "ec2run", "--help")
    assert ran.rc == 0
    for flag in ("--instance-count", "--group", "--key", "--user-data-file", "--client-token"):
        assert flag in ran.out


# --- the pieces --------------------------------------------------------------------------


def test_instance_count_and_launch_time():
    assert classic_instances.instance_count("7") == (7, 7)
    assert classic_instances.instance_count("2-3") == (2, 3)
    assert classic_instances.instance_count(" 1 - 20 ") == (1, 20)
    for bad in ("0", "3-2", "-1", "2-", "x"):
        with pytest.raises(Exception, match="COUNT|at least"):
            classic_instances.instance_count(bad)
    when = dt.datetime(2007, 7, 11, 18, 40, 44, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert classic_instances.launch_time(when) == "2007-07-11T16:40:44+0000"
