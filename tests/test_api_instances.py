"""Instances and network interfaces through boto3 against the real server (SQLite, PostgreSQL).

The server runs with the default Config: auto_run (no hosts, so pending instances run at
once), 20 instances and 5 Elastic IPs per account and region, 5 groups per interface.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import subprocess

import httpx
import pytest
from botocore.exceptions import ClientError

from stockade.store.db import agent_token

from conftest import BIN, raw_request

POOL = ipaddress.ip_network("198.18.0.0/15")
SEED_WEB_AMI = "ami-fba54092"
SEED_APP_AMI = "ami-e3a5408a"
MISSING_I = "i-0123456789abcdef0"


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def run(ec2, n: int = 1, **kw) -> list[dict]:
    kw.setdefault("ImageId", SEED_WEB_AMI)
    return ec2.run_instances(MinCount=n, MaxCount=n, **kw)["Instances"]


def instances(ec2, **kw) -> list[dict]:
    return [i for r in ec2.describe_instances(**kw)["Reservations"] for i in r["Instances"]]


def one(ec2, instance_id: str) -> dict:
    (inst,) = instances(ec2, InstanceIds=[instance_id])
    return inst


def gid(ec2, name: str) -> str:
    return ec2.describe_security_groups(GroupNames=[name])["SecurityGroups"][0]["GroupId"]


def live(ec2) -> list[dict]:
    return [i for i in instances(ec2) if i["State"]["Name"] != "terminated"]


def changes_since(server, revision: int, account_id: str) -> list[dict]:
    reply = httpx.get(
        server.url + "/_stockade/v1/changes",
        params={"since": revision, "limit": 10000},
        headers={"Authorization": f"Bearer {agent_token(server.store)}"},
    ).json()
    return [c for c in reply["changes"] if c["account_id"] == account_id]


def head(server) -> int:
    return server.store.revision()


# --- the seeds ------------------------------------------------------------------------------


def test_mary_launches_seven_apache_instances(ec2, account):
    """002: `ec2-add-group apache`, `ec2run ami-fba54092 -n 7 -g apache`, `ec2din`."""
    ec2.create_security_group(GroupName="apache", Description="Mary's Apache group")
    ec2.authorize_security_group_ingress(
        GroupName="apache", IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0"
    )
    resp = ec2.run_instances(
        ImageId=SEED_WEB_AMI, MinCount=7, MaxCount=7, SecurityGroups=["apache"]
    )
    assert resp["ReservationId"].startswith("r-")
    assert resp["OwnerId"] == account.account_id
    assert [g["GroupName"] for g in resp["Groups"]] == ["apache"]
    launched = resp["Instances"]
    assert len(launched) == 7
    assert [i["AmiLaunchIndex"] for i in launched] == list(range(7))
    # as the seed's output: pending, m1.small, the AMI asked for
    assert {(i["State"]["Name"], i["State"]["Code"]) for i in launched} == {("pending", 0)}
    assert {i["InstanceType"] for i in launched} == {"m1.small"}
    assert {i["ImageId"] for i in launched} == {SEED_WEB_AMI}
    ids = [i["InstanceId"] for i in launched]
    assert all(re.fullmatch(r"i-[0-9a-f]{17}", i) for i in ids) and len(set(ids)) == 7

    # ec2din: running, with distinct private and public addresses and names
    described = instances(ec2, InstanceIds=ids)
    assert {i["State"]["Name"] for i in described} == {"running"}
    privates = {i["PrivateIpAddress"] for i in described}
    publics = {i["PublicIpAddress"] for i in described}
    dns = {i["PublicDnsName"] for i in described}
    assert len(privates) == len(publics) == len(dns) == 7
    for i in described:
        private, public = i["PrivateIpAddress"], i["PublicIpAddress"]
        assert ipaddress.ip_address(private) in ipaddress.ip_network("172.31.0.0/16")
        assert ipaddress.ip_address(public) in POOL
        assert i["PrivateDnsName"] == f"ip-{private.replace('.', '-')}.ec2.internal"
        assert i["PublicDnsName"] == f"ec2-{public.replace('.', '-')}.compute-1.stockade.test"
        assert [g["GroupName"] for g in i["SecurityGroups"]] == ["apache"]
        (eni,) = i["NetworkInterfaces"]
        assert eni["NetworkInterfaceId"].startswith("eni-")
        assert eni["Attachment"]["DeviceIndex"] == 0
        assert eni["PrivateIpAddress"] == private
        assert eni["Association"]["PublicIp"] == public
    (first,) = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"]
    assert first["ReservationId"] == resp["ReservationId"]
    assert first["Instances"][0]["InstanceId"] == ids[0]


def test_instance_limit_and_the_app_tier(ec2):
    """002's whole site (7 web, 20 app, 2 db) fits the default limit of 32; more does not."""
    web = [i["InstanceId"] for i in run(ec2, 7)]
    assert len(ec2.run_instances(ImageId=SEED_APP_AMI, MinCount=20, MaxCount=20)["Instances"]) == 20
    assert len(run(ec2, 2)) == 2
    code, msg = error_of(ec2.run_instances, ImageId=SEED_APP_AMI, MinCount=4, MaxCount=4)
    assert code == "InstanceLimitExceeded" and "(33)" in msg and "limit of 32" in msg
    assert len(live(ec2)) == 29  # the failed request launched nothing
    # MinCount 1, MaxCount 20: as many as fit
    resp = ec2.run_instances(ImageId=SEED_APP_AMI, MinCount=1, MaxCount=20)
    assert len(resp["Instances"]) == 3
    assert error_of(run, ec2)[0] == "InstanceLimitExceeded"
    # a stopped instance does not count; starting it again must fit
    ec2.stop_instances(InstanceIds=[web[0]])
    extra = run(ec2)[0]["InstanceId"]
    code, _ = error_of(ec2.start_instances, InstanceIds=[web[0]])
    assert code == "InstanceLimitExceeded"
    assert one(ec2, web[0])["State"]["Name"] == "stopped"
    ec2.terminate_instances(InstanceIds=[extra])
    ec2.start_instances(InstanceIds=[web[0]])
    assert one(ec2, web[0])["State"]["Name"] == "running"
    # terminated instances do not count
    ec2.terminate_instances(InstanceIds=web[1:4])
    assert len(run(ec2, 3)) == 3


def test_run_defaults_and_options(ec2, account):
    (inst,) = run(ec2)
    got = one(ec2, inst["InstanceId"])
    default = gid(ec2, "default")
    assert got["SecurityGroups"] == [{"GroupName": "default", "GroupId": default}]
    assert got["InstanceType"] == "m1.small"
    subnets = {
        s["SubnetId"]: s
        for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
            "Subnets"
        ]
    }
    subnet = subnets[got["SubnetId"]]
    assert subnet["AvailabilityZone"] == "us-east-1a" == got["Placement"]["AvailabilityZone"]
    assert got["VpcId"] == subnet["VpcId"]
    private = ipaddress.ip_address(got["PrivateIpAddress"])
    assert private in ipaddress.ip_network(subnet["CidrBlock"])
    assert int(private) - int(ipaddress.ip_network(subnet["CidrBlock"])[0]) >= 4  # .0-.3 reserved
    assert "KeyName" not in got and "Tags" not in got
    # every option at once
    ec2.import_key_pair(KeyName="mary", PublicKeyMaterial=ED25519_PUB)
    web = ec2.create_security_group(GroupName="web", Description="d")["GroupId"]
    zone_b = next(s for s in subnets.values() if s["AvailabilityZone"] == "us-east-1b")
    (inst,) = run(
        ec2,
        InstanceType="t3.micro",
        KeyName="mary",
        SecurityGroupIds=[web],
        SecurityGroups=["default"],
        Placement={"AvailabilityZone": "us-east-1b"},
        UserData="#!/bin/sh\necho hello\n",
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]},
            {"ResourceType": "network-interface", "Tags": [{"Key": "nic", "Value": "primary"}]},
            {"ResourceType": "volume", "Tags": [{"Key": "ignored", "Value": "yes"}]},
        ],
    )
    got = one(ec2, inst["InstanceId"])
    assert got["InstanceType"] == "t3.micro" and got["KeyName"] == "mary"
    assert got["SubnetId"] == zone_b["SubnetId"]
    assert got["Tags"] == [{"Key": "Name", "Value": "web-1"}]
    assert [g["GroupId"] for g in got["SecurityGroups"]] == [web, default]
    ipaddress.ip_address(got["PrivateIpAddress"])
    assert ipaddress.ip_address(got["PrivateIpAddress"]) in ipaddress.ip_network(
        zone_b["CidrBlock"]
    )
    eni = got["NetworkInterfaces"][0]["NetworkInterfaceId"]
    (nic,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    assert nic["TagSet"] == [{"Key": "nic", "Value": "primary"}]
    user_data = ec2.describe_instance_attribute(InstanceId=got["InstanceId"], Attribute="userData")
    sent = base64.b64encode(b"#!/bin/sh\necho hello\n").decode()
    assert user_data["UserData"]["Value"] == sent
    assert base64.b64decode(user_data["UserData"]["Value"]) == b"#!/bin/sh\necho hello\n"
    # an explicit subnet and private address
    (inst,) = run(ec2, SubnetId=zone_b["SubnetId"], PrivateIpAddress="172.31.16.200")
    assert one(ec2, inst["InstanceId"])["PrivateIpAddress"] == "172.31.16.200"
    # the subnet's free-address count follows
    (sub,) = ec2.describe_subnets(SubnetIds=[zone_b["SubnetId"]])["Subnets"]
    assert sub["AvailableIpAddressCount"] == 4091 - 2


def test_non_default_vpc_subnet(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.5.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.5.1.0/24")["Subnet"]["SubnetId"]
    (inst,) = run(ec2, SubnetId=sub)
    got = one(ec2, inst["InstanceId"])
    own_default = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"][0]["GroupId"]
    assert got["VpcId"] == vpc and got["PrivateIpAddress"] == "10.5.1.4"
    assert [g["GroupId"] for g in got["SecurityGroups"]] == [own_default]
    # a subnet that does not map public IPs: none
    assert "PublicIpAddress" not in got and got["PublicDnsName"] == ""
    # a group of the default VPC cannot go into this VPC's subnet
    code, msg = error_of(run, ec2, SubnetId=sub, SecurityGroupIds=[gid(ec2, "default")])
    assert code == "InvalidParameter" and "belong to different networks" in msg


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"ImageId": "ami-12345678"}, "InvalidAMIID.NotFound"),
        ({"ImageId": "ami-xyz"}, "InvalidAMIID.Malformed"),
        ({"InstanceType": "m9.gigantic"}, "InvalidParameterValue"),
        ({"KeyName": "nobody"}, "InvalidKeyPair.NotFound"),
        ({"SecurityGroups": ["nosuch"]}, "InvalidGroup.NotFound"),
        ({"SecurityGroupIds": ["sg-0123456789abcdef0"]}, "InvalidGroup.NotFound"),
        ({"SecurityGroupIds": ["sg-x"]}, "InvalidGroupId.Malformed"),
        ({"SubnetId": "subnet-0123456789abcdef0"}, "InvalidSubnetID.NotFound"),
        ({"Placement": {"AvailabilityZone": "us-east-1z"}}, "InvalidParameterValue"),
        ({"PrivateIpAddress": "10.9.9.9"}, "InvalidParameterValue"),
        ({"PrivateIpAddress": "172.31.0.1"}, "InvalidParameterValue"),
        ({"PrivateIpAddress": "not-an-ip"}, "InvalidParameterValue"),
        ({"MinCount": 3, "MaxCount": 2}, "InvalidParameterValue"),
        ({"MinCount": 0, "MaxCount": 2}, "InvalidParameterValue"),
        (
            {"MinCount": 2, "MaxCount": 2, "PrivateIpAddress": "172.31.0.50"},
            "InvalidParameterCombination",
        ),
        (
            {"TagSpecifications": [{"ResourceType": "vpc", "Tags": [{"Key": "a", "Value": "b"}]}]},
            "InvalidParameterValue",
        ),
        (
            {"TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "aws:x"}]}]},
            "InvalidParameterValue",
        ),
        ({"InstanceInitiatedShutdownBehavior": "explode"}, "InvalidParameterValue"),
        (
            {"NetworkInterfaces": [{"DeviceIndex": 0}], "SubnetId": "subnet-0123456789abcdef0"},
            "InvalidParameterCombination",
        ),
    ],
)
def test_run_rejects_and_changes_nothing(ec2, kwargs, code):
    kwargs = {"ImageId": SEED_WEB_AMI, "MinCount": 1, "MaxCount": 1, **kwargs}
    before = ec2.describe_subnets()["Subnets"]
    assert error_of(ec2.run_instances, **kwargs)[0] == code
    assert instances(ec2) == []
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []
    assert ec2.describe_subnets()["Subnets"] == before


def test_groups_per_interface_limit(ec2):
    ids = [
        ec2.create_security_group(GroupName=f"g{i}", Description="d")["GroupId"] for i in range(6)
    ]
    code, msg = error_of(run, ec2, SecurityGroupIds=ids)
    assert code == "SecurityGroupsPerInterfaceLimitExceeded"
    assert msg == "The maximum number of security groups per interface has been reached."
    assert instances(ec2) == []
    (inst,) = run(ec2, SecurityGroupIds=ids[:5])
    iid = inst["InstanceId"]
    assert [g["GroupId"] for g in one(ec2, iid)["SecurityGroups"]] == ids[:5]
    code, _ = error_of(ec2.modify_instance_attribute, InstanceId=iid, Groups=ids)
    assert code == "SecurityGroupsPerInterfaceLimitExceeded"
    eni = one(ec2, iid)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    code, _ = error_of(ec2.modify_network_interface_attribute, NetworkInterfaceId=eni, Groups=ids)
    assert code == "SecurityGroupsPerInterfaceLimitExceeded"
    assert [g["GroupId"] for g in one(ec2, iid)["SecurityGroups"]] == ids[:5]
    attrs = ec2.describe_account_attributes(
        AttributeNames=["vpc-max-security-groups-per-interface"]
    )["AccountAttributes"]
    assert attrs[0]["AttributeValues"] == [{"AttributeValue": "5"}]


def test_modify_groups_of_a_running_instance(server, ec2, account):
    web = ec2.create_security_group(GroupName="web", Description="d")["GroupId"]
    app = ec2.create_security_group(GroupName="app", Description="d")["GroupId"]
    (inst,) = run(ec2, SecurityGroups=["web"])
    iid = inst["InstanceId"]
    eni = one(ec2, iid)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    rev = head(server)
    ec2.modify_instance_attribute(InstanceId=iid, Groups=[app, web])
    got = one(ec2, iid)
    assert [g["GroupId"] for g in got["SecurityGroups"]] == [app, web]
    assert [g["GroupName"] for g in got["NetworkInterfaces"][0]["Groups"]] == ["app", "web"]
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="groupSet")
    assert [g["GroupId"] for g in attr["Groups"]] == [app, web]
    found = instances(ec2, Filters=[{"Name": "instance.group-name", "Values": ["app"]}])
    assert [i["InstanceId"] for i in found] == [iid]
    logged = changes_since(server, rev, account.account_id)
    assert [(c["kind"], c["resource_id"]) for c in logged] == [("interface.groups", eni)]
    assert logged[0]["data"]["group_ids"] == [app, web]
    assert logged[0]["data"]["instance_id"] == iid
    assert logged[0]["data"]["private_ip"] == got["PrivateIpAddress"]
    # the same through the interface
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web])
    assert [g["GroupId"] for g in one(ec2, iid)["SecurityGroups"]] == [web]
    # bad groups change nothing
    other_vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    inner = ec2.create_security_group(GroupName="in", Description="d", VpcId=other_vpc)
    for groups, code in (
        ([inner["GroupId"]], "InvalidGroup.NotFound"),
        (["sg-0123456789abcdef0"], "InvalidGroup.NotFound"),
        (["sg-zz"], "InvalidGroupId.Malformed"),
    ):
        assert error_of(ec2.modify_instance_attribute, InstanceId=iid, Groups=groups)[0] == code
    assert [g["GroupId"] for g in one(ec2, iid)["SecurityGroups"]] == [web]
    rev = head(server)
    error_of(ec2.modify_instance_attribute, InstanceId=iid, Groups=["sg-0123456789abcdef0"])
    assert changes_since(server, rev, account.account_id) == []


def test_group_in_use_cannot_be_deleted(ec2):
    web = ec2.create_security_group(GroupName="web", Description="d")["GroupId"]
    spare = ec2.create_security_group(GroupName="spare", Description="d")["GroupId"]
    (inst,) = run(ec2, SecurityGroupIds=[web])
    code, msg = error_of(ec2.delete_security_group, GroupId=web)
    assert (code, msg) == ("DependencyViolation", f"resource {web} has a dependent object")
    assert error_of(ec2.delete_security_group, GroupName="web")[0] == "DependencyViolation"
    ec2.modify_instance_attribute(InstanceId=inst["InstanceId"], Groups=[spare])
    ec2.delete_security_group(GroupId=web)  # no longer in use
    assert error_of(ec2.delete_security_group, GroupId=spare)[0] == "DependencyViolation"
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    ec2.delete_security_group(GroupId=spare)  # a terminated instance holds nothing


def test_subnet_with_interfaces_cannot_be_deleted(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.0.0/24")["Subnet"]["SubnetId"]
    (inst,) = run(ec2, SubnetId=sub)
    code, msg = error_of(ec2.delete_subnet, SubnetId=sub)
    assert code == "DependencyViolation" and sub in msg
    assert error_of(ec2.delete_vpc, VpcId=vpc)[0] == "DependencyViolation"
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    ec2.delete_subnet(SubnetId=sub)
    ec2.delete_vpc(VpcId=vpc)
    # the terminated instance's record remains
    assert one(ec2, inst["InstanceId"])["State"]["Name"] == "terminated"


def test_private_addresses_in_use_and_reused(ec2):
    # a subnet of its own, so the lowest free addresses are known
    vpc = ec2.create_vpc(CidrBlock="10.213.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.213.7.0/24")["Subnet"]["SubnetId"]
    (a,) = run(ec2, SubnetId=sub, PrivateIpAddress="10.213.7.50")
    code, msg = error_of(run, ec2, SubnetId=sub, PrivateIpAddress="10.213.7.50")
    assert (code, msg) == ("InvalidIPAddress.InUse", "Address 10.213.7.50 is in use.")
    first = run(ec2, 2, SubnetId=sub)
    assert [one(ec2, i["InstanceId"])["PrivateIpAddress"] for i in first] == [
        "10.213.7.4",
        "10.213.7.5",
    ]
    ec2.terminate_instances(InstanceIds=[a["InstanceId"], first[0]["InstanceId"]])
    gone = one(ec2, a["InstanceId"])
    assert gone["State"]["Name"] == "terminated"
    assert "PrivateIpAddress" not in gone and gone["NetworkInterfaces"] == []
    # both addresses are free again
    (b,) = run(ec2, SubnetId=sub, PrivateIpAddress="10.213.7.50")
    (c,) = run(ec2, SubnetId=sub)
    assert one(ec2, b["InstanceId"])["PrivateIpAddress"] == "10.213.7.50"
    assert one(ec2, c["InstanceId"])["PrivateIpAddress"] == "10.213.7.4"
    privates = [i["PrivateIpAddress"] for i in live(ec2)]
    assert len(privates) == len(set(privates)) == 3


def test_stop_start_keeps_private_changes_public(ec2):
    (inst,) = run(ec2)
    iid = inst["InstanceId"]
    before = one(ec2, iid)
    resp = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"]
    assert resp == [
        {
            "InstanceId": iid,
            "CurrentState": {"Code": 64, "Name": "stopping"},
            "PreviousState": {"Code": 16, "Name": "running"},
        }
    ]
    stopped = one(ec2, iid)
    assert stopped["State"]["Name"] == "stopped"
    assert stopped["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    assert stopped["StateTransitionReason"].startswith("User initiated (")
    assert stopped["PrivateIpAddress"] == before["PrivateIpAddress"]
    assert "PublicIpAddress" not in stopped and stopped["PublicDnsName"] == ""
    resp = ec2.start_instances(InstanceIds=[iid])["StartingInstances"]
    assert resp[0]["CurrentState"]["Name"] == "pending"
    assert resp[0]["PreviousState"]["Name"] == "stopped"
    after = one(ec2, iid)
    assert after["State"]["Name"] == "running"
    assert after["PrivateIpAddress"] == before["PrivateIpAddress"]
    assert after["PublicIpAddress"] != before["PublicIpAddress"]
    assert after["PublicDnsName"] == (
        f"ec2-{after['PublicIpAddress'].replace('.', '-')}.compute-1.stockade.test"
    )
    # with an Elastic IP the public address survives a stop and start
    alloc = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=iid, AllocationId=alloc["AllocationId"])
    ec2.stop_instances(InstanceIds=[iid])
    assert one(ec2, iid)["PublicIpAddress"] == alloc["PublicIp"]
    ec2.start_instances(InstanceIds=[iid])
    got = one(ec2, iid)
    assert got["PublicIpAddress"] == alloc["PublicIp"]
    assert got["PublicDnsName"].startswith(f"ec2-{alloc['PublicIp'].replace('.', '-')}.")
    assert (
        got["NetworkInterfaces"][0]["Association"]["IpOwnerId"]
        == got["NetworkInterfaces"][0]["OwnerId"]
    )


def test_state_machine(ec2):
    a, b = (i["InstanceId"] for i in run(ec2, 2))
    # already running: start is a no-op
    resp = ec2.start_instances(InstanceIds=[a])["StartingInstances"][0]
    assert resp["CurrentState"]["Name"] == resp["PreviousState"]["Name"] == "running"
    ec2.reboot_instances(InstanceIds=[a])
    assert one(ec2, a)["State"]["Name"] == "running"
    ec2.stop_instances(InstanceIds=[b])
    code, msg = error_of(ec2.reboot_instances, InstanceIds=[a, b])
    assert code == "IncorrectInstanceState" and b in msg
    resp = ec2.stop_instances(InstanceIds=[b])["StoppingInstances"][0]  # stopped: no-op
    assert resp["CurrentState"]["Name"] == resp["PreviousState"]["Name"] == "stopped"
    resp = ec2.terminate_instances(InstanceIds=[a, b])["TerminatingInstances"]
    assert [(r["PreviousState"]["Name"], r["CurrentState"]["Name"]) for r in resp] == [
        ("running", "shutting-down"),
        ("stopped", "shutting-down"),
    ]
    assert {one(ec2, i)["State"]["Name"] for i in (a, b)} == {"terminated"}
    resp = ec2.terminate_instances(InstanceIds=[a])["TerminatingInstances"][0]
    assert resp["CurrentState"] == {"Code": 48, "Name": "terminated"}
    code, msg = error_of(ec2.start_instances, InstanceIds=[a])
    assert code == "IncorrectInstanceState"
    assert msg == f"The instance '{a}' is not in a state from which it can be started."
    code, msg = error_of(ec2.stop_instances, InstanceIds=[a])
    assert code == "IncorrectInstanceState"
    assert msg == f"This instance '{a}' is not in a state from which it can be stopped."
    assert error_of(ec2.reboot_instances, InstanceIds=[a])[0] == "IncorrectInstanceState"
    # a request naming one bad instance changes none of them
    (c,) = (i["InstanceId"] for i in run(ec2))
    assert error_of(ec2.stop_instances, InstanceIds=[c, a])[0] == "IncorrectInstanceState"
    assert one(ec2, c)["State"]["Name"] == "running"
    assert error_of(ec2.stop_instances, InstanceIds=[c, MISSING_I])[0] == (
        "InvalidInstanceID.NotFound"
    )
    assert one(ec2, c)["State"]["Name"] == "running"


def test_terminate_releases_addresses_and_interface(ec2):
    (inst,) = run(ec2)
    iid = inst["InstanceId"]
    got = one(ec2, iid)
    eni = got["NetworkInterfaces"][0]["NetworkInterfaceId"]
    alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(InstanceId=iid, AllocationId=alloc)
    ec2.terminate_instances(InstanceIds=[iid])
    gone = one(ec2, iid)
    assert gone["State"] == {"Code": 48, "Name": "terminated"}
    assert gone["SecurityGroups"] == [] and gone["NetworkInterfaces"] == []
    assert "PublicIpAddress" not in gone and "PrivateIpAddress" not in gone
    assert ec2.describe_network_interfaces()["NetworkInterfaces"] == []
    code, _ = error_of(ec2.describe_network_interfaces, NetworkInterfaceIds=[eni])
    assert code == "InvalidNetworkInterfaceID.NotFound"
    (addr,) = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"]
    assert "AssociationId" not in addr and "InstanceId" not in addr
    ec2.release_address(AllocationId=alloc)


def test_client_token_idempotency(ec2):
    first = ec2.run_instances(ImageId=SEED_WEB_AMI, MinCount=2, MaxCount=2, ClientToken="tok-1")
    again = ec2.run_instances(ImageId=SEED_WEB_AMI, MinCount=2, MaxCount=2, ClientToken="tok-1")
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [
        i["InstanceId"] for i in first["Instances"]
    ]
    assert {i["ClientToken"] for i in again["Instances"]} == {"tok-1"}
    assert len(instances(ec2)) == 2
    code, _ = error_of(
        ec2.run_instances, ImageId=SEED_APP_AMI, MinCount=2, MaxCount=2, ClientToken="tok-1"
    )
    assert code == "IdempotentParameterMismatch"
    other = ec2.run_instances(ImageId=SEED_WEB_AMI, MinCount=1, MaxCount=1, ClientToken="tok-2")
    assert other["ReservationId"] != first["ReservationId"]
    assert [
        i["InstanceId"]
        for i in instances(ec2, Filters=[{"Name": "client-token", "Values": ["tok-1"]}])
    ] == [i["InstanceId"] for i in first["Instances"]]


def test_describe_filters(ec2, account):
    web = ec2.create_security_group(GroupName="web", Description="d")["GroupId"]
    ec2.import_key_pair(KeyName="k1", PublicKeyMaterial=ED25519_PUB)
    a = ec2.run_instances(
        ImageId=SEED_WEB_AMI,
        MinCount=2,
        MaxCount=2,
        SecurityGroups=["web"],
        InstanceType="t2.micro",
        KeyName="k1",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "tier", "Value": "web"}]}],
    )
    b = ec2.run_instances(
        ImageId=SEED_APP_AMI, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "us-east-1c"}
    )
    a_ids = sorted(i["InstanceId"] for i in a["Instances"])
    (b_id,) = (i["InstanceId"] for i in b["Instances"])
    ec2.stop_instances(InstanceIds=[a_ids[1]])
    b_inst = one(ec2, b_id)
    a0 = one(ec2, a_ids[0])

    def ids(*filters: tuple[str, list[str]]) -> list[str]:
        got = instances(ec2, Filters=[{"Name": n, "Values": v} for n, v in filters])
        return sorted(i["InstanceId"] for i in got)

    everything = sorted([*a_ids, b_id])
    assert ids() == everything
    assert ids(("instance-id", [b_id])) == [b_id]
    assert ids(("instance-state-name", ["running"])) == sorted([a_ids[0], b_id])
    assert ids(("instance-state-code", ["80"])) == [a_ids[1]]
    assert ids(("instance.group-id", [web])) == a_ids
    assert ids(("instance.group-name", ["default"])) == [b_id]
    assert ids(("group-id", [web])) == a_ids
    assert ids(("group-name", ["w*"])) == a_ids
    assert ids(("private-ip-address", [b_inst["PrivateIpAddress"]])) == [b_id]
    assert ids(("ip-address", [b_inst["PublicIpAddress"]])) == [b_id]
    assert ids(("private-dns-name", [a0["PrivateDnsName"]])) == [a_ids[0]]
    assert ids(("dns-name", [b_inst["PublicDnsName"]])) == [b_id]
    assert ids(("dns-name", ["*.compute-1.stockade.test"])) == sorted([a_ids[0], b_id])
    assert ids(("subnet-id", [b_inst["SubnetId"]])) == [b_id]
    assert ids(("vpc-id", [b_inst["VpcId"]])) == everything
    assert ids(("image-id", [SEED_APP_AMI])) == [b_id]
    assert ids(("instance-type", ["t2.micro"])) == a_ids
    assert ids(("key-name", ["k1"])) == a_ids
    assert ids(("reservation-id", [a["ReservationId"]])) == a_ids
    assert ids(("availability-zone", ["us-east-1c"])) == [b_id]
    eni = b_inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert ids(("network-interface.network-interface-id", [eni])) == [b_id]
    assert ids(("tag:tier", ["web"])) == a_ids
    assert ids(("tag-key", ["tier"])) == a_ids
    assert ids(("tag:tier", ["app"])) == []
    assert ids(("owner-id", [account.account_id]), ("instance-type", ["m1.small"])) == [b_id]
    assert ids(("instance-state-name", ["running", "stopped"]), ("tag:tier", ["web"])) == a_ids
    # grouped by reservation
    resp = ec2.describe_instances(Filters=[{"Name": "tag:tier", "Values": ["web"]}])
    assert [r["ReservationId"] for r in resp["Reservations"]] == [a["ReservationId"]]
    assert [g["GroupId"] for g in resp["Reservations"][0]["Groups"]] == [web]
    code, msg = error_of(ec2.describe_instances, Filters=[{"Name": "colour", "Values": ["x"]}])
    assert code == "InvalidParameterValue" and "colour" in msg


def test_pagination(server, account, ec2):
    made = [i["InstanceId"] for i in run(ec2, 12)]
    seen, token, pages = [], None, 0
    while True:
        kw = {"MaxResults": 5, **({"NextToken": token} if token else {})}
        resp = ec2.describe_instances(**kw)
        got = [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]
        assert len(got) <= 5
        seen += got
        pages += 1
        token = resp.get("NextToken")
        if not token:
            break
    assert pages == 3 and seen == made  # launch order
    paginator = ec2.get_paginator("describe_instances")
    total = sum(
        len(r["Instances"])
        for page in paginator.paginate(PaginationConfig={"PageSize": 5})
        for r in page["Reservations"]
    )
    assert total == 12
    reply = raw_request(server, account, {"Action": "DescribeInstances", "MaxResults": "4"})
    assert (reply.status, reply.code) == (400, "InvalidParameterValue")
    code, _ = error_of(ec2.describe_instances, InstanceIds=[made[0]], MaxResults=5)
    assert code == "InvalidParameterCombination"
    assert error_of(ec2.describe_instances, MaxResults=5, NextToken="nope")[0] == (
        "InvalidPaginationToken"
    )
    statuses = ec2.describe_instance_status(MaxResults=5)
    assert len(statuses["InstanceStatuses"]) == 5 and statuses["NextToken"]
    enis = ec2.describe_network_interfaces(MaxResults=5)
    assert len(enis["NetworkInterfaces"]) == 5 and enis["NextToken"]


def test_instance_ids_not_found_or_malformed(ec2):
    (inst,) = run(ec2)
    code, msg = error_of(ec2.describe_instances, InstanceIds=[MISSING_I])
    assert (code, msg) == (
        "InvalidInstanceID.NotFound",
        f"The instance ID '{MISSING_I}' does not exist",
    )
    code, _ = error_of(ec2.describe_instances, InstanceIds=[inst["InstanceId"], MISSING_I])
    assert code == "InvalidInstanceID.NotFound"
    for call in (
        ec2.describe_instances,
        ec2.stop_instances,
        ec2.start_instances,
        ec2.terminate_instances,
        ec2.reboot_instances,
        ec2.describe_instance_status,
    ):
        assert error_of(call, InstanceIds=["i-nothex"])[0] == "InvalidInstanceID.Malformed"
        assert error_of(call, InstanceIds=[MISSING_I])[0] == "InvalidInstanceID.NotFound"
    assert one(ec2, inst["InstanceId"])["State"]["Name"] == "running"


def test_instance_status(ec2):
    a, b = (i["InstanceId"] for i in run(ec2, 2))
    ec2.stop_instances(InstanceIds=[b])
    (status,) = ec2.describe_instance_status()["InstanceStatuses"]
    assert status["InstanceId"] == a
    assert status["InstanceState"] == {"Code": 16, "Name": "running"}
    assert status["InstanceStatus"]["Status"] == "ok"
    assert status["SystemStatus"]["Details"] == [{"Name": "reachability", "Status": "passed"}]
    assert status["AvailabilityZone"] == "us-east-1a"
    every = ec2.describe_instance_status(IncludeAllInstances=True)["InstanceStatuses"]
    assert {(s["InstanceId"], s["InstanceState"]["Name"]) for s in every} == {
        (a, "running"),
        (b, "stopped"),
    }
    stopped = ec2.describe_instance_status(
        IncludeAllInstances=True, Filters=[{"Name": "instance-state-name", "Values": ["stopped"]}]
    )["InstanceStatuses"]
    assert [(s["InstanceId"], s["InstanceStatus"]["Status"]) for s in stopped] == [
        (b, "not-applicable")
    ]
    assert ec2.describe_instance_status(InstanceIds=[b])["InstanceStatuses"] == []


def test_instance_attributes(ec2):
    (inst,) = run(ec2, UserData="boot")
    iid = inst["InstanceId"]
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceType")
    assert attr["InstanceType"] == {"Value": "m1.small"} and attr["InstanceId"] == iid
    code, msg = error_of(
        ec2.modify_instance_attribute, InstanceId=iid, InstanceType={"Value": "t3.micro"}
    )
    assert code == "IncorrectInstanceState" and "'stopped'" in msg
    ec2.stop_instances(InstanceIds=[iid])
    assert error_of(
        ec2.modify_instance_attribute, InstanceId=iid, InstanceType={"Value": "z9.huge"}
    )[0] == ("InvalidParameterValue")
    ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t3.micro"})
    ec2.modify_instance_attribute(InstanceId=iid, UserData={"Value": b"new data"})
    ec2.modify_instance_attribute(InstanceId=iid, Attribute="instanceType", Value="t2.small")
    got = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]
    assert base64.b64decode(got["Value"]) == b"new data"
    assert one(ec2, iid)["InstanceType"] == "t2.small"
    ec2.start_instances(InstanceIds=[iid])
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": True})
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="disableApiTermination")
    assert attr["DisableApiTermination"] == {"Value": True}
    code, _ = error_of(ec2.terminate_instances, InstanceIds=[iid])
    assert code == "OperationNotPermitted"
    assert one(ec2, iid)["State"]["Name"] == "running"
    ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": False})
    ec2.modify_instance_attribute(InstanceId=iid, SourceDestCheck={"Value": False})
    assert one(ec2, iid)["SourceDestCheck"] is False
    attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="sourceDestCheck")
    assert attr["SourceDestCheck"] == {"Value": False}
    code, _ = error_of(
        ec2.modify_instance_attribute,
        InstanceId=iid,
        InstanceType={"Value": "t2.micro"},
        DisableApiTermination={"Value": True},
    )
    assert code == "InvalidParameterCombination"
    assert error_of(ec2.modify_instance_attribute, InstanceId=iid)[0] == "MissingParameter"
    code, _ = error_of(ec2.describe_instance_attribute, InstanceId=MISSING_I, Attribute="userData")
    assert code == "InvalidInstanceID.NotFound"
    (plain,) = run(ec2)
    empty = ec2.describe_instance_attribute(InstanceId=plain["InstanceId"], Attribute="userData")
    assert empty["UserData"] == {}
    ec2.terminate_instances(InstanceIds=[iid])
    code, _ = error_of(ec2.modify_instance_attribute, InstanceId=iid, Groups=[gid(ec2, "default")])
    assert code == "IncorrectInstanceState"


def test_network_interfaces(ec2, account):
    web = ec2.create_security_group(GroupName="web", Description="d")["GroupId"]
    a, b = run(ec2, 2, SecurityGroupIds=[web])
    ec2.stop_instances(InstanceIds=[b["InstanceId"]])
    nics = ec2.describe_network_interfaces()["NetworkInterfaces"]
    assert len(nics) == 2
    by_instance = {n["Attachment"]["InstanceId"]: n for n in nics}
    na = by_instance[a["InstanceId"]]
    got = one(ec2, a["InstanceId"])
    assert na["NetworkInterfaceId"] == got["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert na["Status"] == "in-use" and na["OwnerId"] == account.account_id
    assert na["PrivateIpAddress"] == got["PrivateIpAddress"]
    assert na["Association"]["PublicIp"] == got["PublicIpAddress"]
    assert na["Attachment"]["DeviceIndex"] == 0
    assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", na["MacAddress"])
    assert na["Groups"] == [{"GroupId": web, "GroupName": "web"}]
    nb = by_instance[b["InstanceId"]]
    assert "Association" not in nb  # stopped: no pool address

    def ids(name: str, *values: str) -> list[str]:
        got = ec2.describe_network_interfaces(Filters=[{"Name": name, "Values": list(values)}])
        return sorted(n["NetworkInterfaceId"] for n in got["NetworkInterfaces"])

    both = sorted([na["NetworkInterfaceId"], nb["NetworkInterfaceId"]])
    assert ids("network-interface-id", na["NetworkInterfaceId"]) == [na["NetworkInterfaceId"]]
    assert ids("attachment.instance-id", b["InstanceId"]) == [nb["NetworkInterfaceId"]]
    assert ids("instance-id", b["InstanceId"]) == [nb["NetworkInterfaceId"]]
    assert ids("group-id", web) == both
    assert ids("group-name", "web") == both
    assert ids("private-ip-address", na["PrivateIpAddress"]) == [na["NetworkInterfaceId"]]
    assert ids("addresses.private-ip-address", nb["PrivateIpAddress"]) == [nb["NetworkInterfaceId"]]
    assert ids("subnet-id", na["SubnetId"]) == both
    assert ids("vpc-id", na["VpcId"]) == both
    assert ids("status", "in-use") == both
    assert ids("status", "available") == []
    assert ids("association.public-ip", na["Association"]["PublicIp"]) == [na["NetworkInterfaceId"]]
    assert ids("attachment.instance-id", MISSING_I) == []
    # attributes
    ec2.modify_network_interface_attribute(
        NetworkInterfaceId=na["NetworkInterfaceId"], Description={"Value": "front door"}
    )
    (got,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[na["NetworkInterfaceId"]])[
        "NetworkInterfaces"
    ]
    assert got["Description"] == "front door"
    for kw, code in (
        (
            {"NetworkInterfaceId": "eni-0123456789abcdef0", "Groups": [web]},
            "InvalidNetworkInterfaceID.NotFound",
        ),
        ({"NetworkInterfaceId": "eni-bad", "Groups": [web]}, "InvalidNetworkInterfaceID.Malformed"),
        ({"NetworkInterfaceId": na["NetworkInterfaceId"]}, "MissingParameter"),
        (
            {"NetworkInterfaceId": na["NetworkInterfaceId"], "Groups": ["sg-0123456789abcdef0"]},
            "InvalidGroup.NotFound",
        ),
    ):
        assert error_of(ec2.modify_network_interface_attribute, **kw)[0] == code
    code, _ = error_of(ec2.describe_network_interfaces, Filters=[{"Name": "x", "Values": ["1"]}])
    assert code == "InvalidParameterValue"


def test_tags_on_instances_interfaces_addresses_keys(ec2):
    (inst,) = run(ec2)
    iid = inst["InstanceId"]
    eni = one(ec2, iid)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
    key = ec2.import_key_pair(KeyName="tagged", PublicKeyMaterial=ED25519_PUB)["KeyPairId"]
    ec2.create_tags(Resources=[iid, eni, alloc, key], Tags=[{"Key": "team", "Value": "blue"}])
    tags = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["team"]}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"]) for t in tags} == {
        (iid, "instance"),
        (eni, "network-interface"),
        (alloc, "elastic-ip"),
        (key, "key-pair"),
    }
    assert one(ec2, iid)["Tags"] == [{"Key": "team", "Value": "blue"}]
    (addr,) = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"]
    assert addr["Tags"] == [{"Key": "team", "Value": "blue"}]
    (kp,) = ec2.describe_key_pairs(KeyPairIds=[key])["KeyPairs"]
    assert kp["Tags"] == [{"Key": "team", "Value": "blue"}]
    ec2.delete_tags(Resources=[iid], Tags=[{"Key": "team"}])
    assert "Tags" not in one(ec2, iid)
    code, _ = error_of(ec2.create_tags, Resources=[MISSING_I], Tags=[{"Key": "a", "Value": "b"}])
    assert code == "InvalidInstanceID.NotFound"


def test_accounts_are_isolated(server):
    alice, bob = server.account(), server.account()
    a, b = server.client(alice), server.client(bob)
    (ai,) = run(a)
    (bi,) = run(b)
    # each account's own default VPC is 172.31.0.0/16, but Stockade hands out addresses
    # unique in the region (so the sandbox can route them); public addresses differ too
    pa, pb = one(a, ai["InstanceId"]), one(b, bi["InstanceId"])
    assert pa["VpcId"] != pb["VpcId"]
    assert pa["PrivateIpAddress"] != pb["PrivateIpAddress"]
    assert (
        one(a, ai["InstanceId"])["PublicIpAddress"] != one(b, bi["InstanceId"])["PublicIpAddress"]
    )
    assert [i["InstanceId"] for i in instances(b)] == [bi["InstanceId"]]
    for call, kw in (
        (b.describe_instances, {"InstanceIds": [ai["InstanceId"]]}),
        (b.terminate_instances, {"InstanceIds": [ai["InstanceId"]]}),
        (
            b.modify_instance_attribute,
            {"InstanceId": ai["InstanceId"], "Groups": ["sg-0123456789abcdef0"]},
        ),
    ):
        assert error_of(call, **kw)[0] == "InvalidInstanceID.NotFound"
    alloc = a.allocate_address(Domain="vpc")
    code, _ = error_of(
        b.associate_address, AllocationId=alloc["AllocationId"], InstanceId=bi["InstanceId"]
    )
    assert code == "InvalidAllocationID.NotFound"
    assert error_of(b.release_address, PublicIp=alloc["PublicIp"])[0] == "InvalidAddress.NotFound"
    assert one(a, ai["InstanceId"])["State"]["Name"] == "running"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Action": "RunInstances", "ImageId": SEED_WEB_AMI, "MaxCount": "1"}, "MissingParameter"),
        ({"Action": "RunInstances", "MinCount": "1", "MaxCount": "1"}, "MissingParameter"),
        (
            {"Action": "RunInstances", "ImageId": SEED_WEB_AMI, "MinCount": "x", "MaxCount": "1"},
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "RunInstances",
                "ImageId": SEED_WEB_AMI,
                "MinCount": "1",
                "MaxCount": "1",
                "UserData": "%%% not base64 %%%",
            },
            "InvalidUserData.Malformed",
        ),
        (
            {
                "Action": "RunInstances",
                "ImageId": SEED_WEB_AMI,
                "MinCount": "1",
                "MaxCount": "1",
                "UserData": base64.b64encode(b"x" * 16385).decode(),
            },
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "RunInstances",
                "ImageId": SEED_WEB_AMI,
                "MinCount": "1",
                "MaxCount": "1",
                "ClientToken": "t" * 65,
            },
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "RunInstances",
                "ImageId": SEED_WEB_AMI,
                "MinCount": "1",
                "MaxCount": "1",
                "SecurityGroupId.1": "sg-0123456789abcdef0",
                "SecurityGroupId.1.x": "y",
            },
            "InvalidParameterValue",
        ),
        ({"Action": "StopInstances"}, "MissingParameter"),
        ({"Action": "TerminateInstances", "InstanceId.1": ""}, "InvalidInstanceID.Malformed"),
        ({"Action": "DescribeInstances", "InstanceId.1": "i-zz"}, "InvalidInstanceID.Malformed"),
        ({"Action": "DescribeInstances", "MaxResults": "1001"}, "InvalidParameterValue"),
        ({"Action": "DescribeInstances", "Filter.1.Name": "instance-id"}, "InvalidParameterValue"),
        ({"Action": "DescribeInstanceAttribute", "InstanceId": MISSING_I}, "MissingParameter"),
        (
            {"Action": "DescribeInstanceAttribute", "InstanceId": MISSING_I, "Attribute": "bogus"},
            "InvalidInstanceID.NotFound",
        ),
        ({"Action": "ModifyInstanceAttribute", "InstanceId": "i-1"}, "InvalidInstanceID.Malformed"),
        ({"Action": "ModifyNetworkInterfaceAttribute"}, "MissingParameter"),
        ({"Action": "AssociateAddress", "InstanceId": MISSING_I}, "MissingParameter"),
        ({"Action": "DisassociateAddress"}, "MissingParameter"),
        ({"Action": "ReleaseAddress"}, "MissingParameter"),
        ({"Action": "AllocateAddress", "Domain": "galaxy"}, "InvalidParameterValue"),
        ({"Action": "DescribeAddresses", "PublicIp.1": "not-an-ip"}, "InvalidParameterValue"),
        ({"Action": "CreateKeyPair"}, "MissingParameter"),
        ({"Action": "CreateKeyPair", "KeyName": "k", "KeyType": "dsa"}, "InvalidParameterValue"),
        (
            {"Action": "ImportKeyPair", "KeyName": "k", "PublicKeyMaterial": "@@"},
            "InvalidParameterValue",
        ),
        (
            {
                "Action": "ImportKeyPair",
                "KeyName": "k",
                "PublicKeyMaterial": "c3NoLXJzYSBnYXJiYWdl",
            },
            "InvalidKey.Format",
        ),
        ({"Action": "DeleteKeyPair"}, "MissingParameter"),
        ({"Action": "DescribeImages", "ImageId.1": "ami-!"}, "InvalidAMIID.Malformed"),
    ],
)
def test_bad_input_gets_ec2_errors_and_changes_nothing(server, account, params, code):
    ec2 = server.client(account)
    assert instances(ec2) == []  # sets up the account's region first
    rev = head(server)
    reply = raw_request(server, account, params)
    assert reply.status == 400, reply.body
    assert reply.code == code, reply.body
    assert reply.message
    assert instances(ec2) == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert changes_since(server, rev, account.account_id) == []


def test_dry_run(ec2):
    code, _ = error_of(run, ec2, DryRun=True)
    assert code == "DryRunOperation"
    assert instances(ec2) == []
    assert error_of(run, ec2, DryRun=True, ImageId="ami-12345678")[0] == "InvalidAMIID.NotFound"


def test_change_log_follows_the_lifecycle(server, ec2, account):
    ec2.describe_instances()  # the account's region is set up before we look
    rev = head(server)
    (inst,) = run(ec2)
    iid = inst["InstanceId"]
    got = one(ec2, iid)
    eni = got["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.stop_instances(InstanceIds=[iid])
    ec2.start_instances(InstanceIds=[iid])
    alloc = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(InstanceId=iid, AllocationId=alloc)
    ec2.terminate_instances(InstanceIds=[iid])
    logged = changes_since(server, rev, account.account_id)
    kinds = [(c["kind"], c["resource_id"]) for c in logged]
    states = [
        (c["data"]["previous"], c["data"]["state"]) for c in logged if c["kind"] == "instance.state"
    ]
    assert states == [
        ("pending", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
        ("stopped", "pending"),
        ("pending", "running"),
        ("running", "shutting-down"),
        ("shutting-down", "terminated"),
    ]
    assert kinds[:2] == [("interface.created", eni), ("instance.created", iid)]
    created = logged[0]["data"]
    assert created["private_ip"] == got["PrivateIpAddress"]
    assert created["instance_id"] == iid and created["group_ids"] == [gid(ec2, "default")]
    public_ips = [c["data"]["public_ip"] for c in logged if c["kind"] == "interface.public_ip"]
    alloc_ip = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]["PublicIp"]
    # launch, stop (gone), start (new), associate (the Elastic IP)
    assert len(public_ips) == 4 and public_ips[1] is None and public_ips[3] == alloc_ip
    assert public_ips[0] != public_ips[2]
    assert ("address.associated", alloc) in kinds
    assert ("address.disassociated", alloc) in kinds
    assert kinds[-2:] == [("interface.deleted", eni), ("instance.state", iid)]


def test_aws_cli(server, account):
    env = server.env(account)

    def aws(*args: str) -> dict:
        out = subprocess.run(
            [str(BIN / "aws"), "ec2", *args, "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    made = aws(
        "run-instances",
        "--image-id",
        SEED_WEB_AMI,
        "--count",
        "2",
        "--instance-type",
        "t2.micro",
        "--user-data",
        "hello from the cli",
    )
    ids = [i["InstanceId"] for i in made["Instances"]]
    assert len(ids) == 2
    shown = aws("describe-instances", "--instance-ids", ids[0])
    assert shown["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    attr = aws("describe-instance-attribute", "--instance-id", ids[0], "--attribute", "userData")
    assert base64.b64decode(attr["UserData"]["Value"]) == b"hello from the cli"
    stopped = aws("stop-instances", "--instance-ids", ids[1])
    assert stopped["StoppingInstances"][0]["CurrentState"]["Name"] == "stopping"
    alloc = aws("allocate-address", "--domain", "vpc")
    assoc = aws(
        "associate-address", "--instance-id", ids[0], "--allocation-id", alloc["AllocationId"]
    )
    assert assoc["AssociationId"].startswith("eipassoc-")
    addrs = aws("describe-addresses", "--public-ips", alloc["PublicIp"])["Addresses"]
    assert addrs[0]["InstanceId"] == ids[0]
    bad = subprocess.run(
        [str(BIN / "aws"), "ec2", "start-instances", "--instance-ids", "i-0123456789abcdef0"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode != 0 and "InvalidInstanceID.NotFound" in bad.stderr
    aws("terminate-instances", "--instance-ids", *ids)
    states = aws("describe-instances", "--filters", "Name=instance-state-name,Values=terminated")
    assert sorted(
        i["InstanceId"] for r in states["Reservations"] for i in r["Instances"]
    ) == sorted(ids)


# an ed25519 public key made with ssh-keygen, for tests that need one key pair
ED25519_PUB = (
    b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP+TEPZLwZorFwPq6S3Hj7hhJIyiqZuxny9pGlBhpE7C"
    b" test@stockade"
)
