"""The EC2 surface around groups through boto3 (SQLite and PostgreSQL): attributes, the
default VPC, legacy filter names, CIDR normalisation, key formats, instance types, regions
and zone ids. Each bad request gets EC2's error and changes nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def test_regions_and_zone_ids(ec2):
    regions = {r["RegionName"]: r for r in ec2.describe_regions()["Regions"]}
    assert len(regions) >= 34
    for name in ("us-east-1", "ap-southeast-7", "mx-central-1", "il-central-1", "ca-west-1"):
        assert name in regions
    assert regions["us-east-1"]["OptInStatus"] == "opt-in-not-required"
    assert regions["af-south-1"]["OptInStatus"] == "opted-in"
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert [(z["ZoneName"], z["ZoneId"]) for z in zones][:2] == [
        ("us-east-1a", "use1-az1"),
        ("us-east-1b", "use1-az2"),
    ]
    picked = ec2.describe_availability_zones(ZoneIds=["use1-az2"])["AvailabilityZones"]
    assert [z["ZoneName"] for z in picked] == ["us-east-1b"]
    subnet = ec2.describe_subnets(
        Filters=[{"Name": "availability-zone-id", "Values": ["use1-az1"]}]
    )
    assert [s["AvailabilityZone"] for s in subnet["Subnets"]] == ["us-east-1a"]


def test_zone_ids_of_other_regions(server, account):
    ec2 = server.client(account, region="ap-southeast-2")
    zones = ec2.describe_availability_zones()["AvailabilityZones"]
    assert zones[0]["ZoneId"] == "apse2-az1"
    eu = server.client(account, region="eu-central-1")
    assert eu.describe_availability_zones()["AvailabilityZones"][2]["ZoneId"] == "euc1-az3"


def test_vpc_attributes(ec2):
    default = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    assert len(default) == 1 and default[0]["IsDefault"] is True
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]

    def attr(vpc_id: str, name: str) -> bool:
        out = ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=name)
        key = name[0].upper() + name[1:]
        assert out["VpcId"] == vpc_id
        return out[key]["Value"]

    assert attr(vpc, "enableDnsSupport") is True
    assert attr(vpc, "enableDnsHostnames") is False
    assert attr(default[0]["VpcId"], "enableDnsHostnames") is True
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    assert attr(vpc, "enableDnsHostnames") is True
    # DNS support cannot go while hostnames are on (and nothing changes)
    code, _ = error_of(ec2.modify_vpc_attribute, VpcId=vpc, EnableDnsSupport={"Value": False})
    assert code == "InvalidParameterCombination"
    assert attr(vpc, "enableDnsSupport") is True
    code, msg = error_of(ec2.describe_vpc_attribute, VpcId=vpc, Attribute="enableDnsSupport2")
    assert code == "InvalidParameterValue" and "attribute" in msg
    code, _ = error_of(ec2.modify_vpc_attribute, VpcId=vpc)
    assert code == "MissingParameter"
    code, _ = error_of(
        ec2.describe_vpc_attribute, VpcId="vpc-0123456789abcdef0", Attribute="enableDnsSupport"
    )
    assert code == "InvalidVpcID.NotFound"


def test_subnet_attributes(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.21.0.0/16")["Vpc"]["VpcId"]
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.21.1.0/24")["Subnet"]["SubnetId"]

    def subnet() -> dict:
        return ec2.describe_subnets(SubnetIds=[sid])["Subnets"][0]

    assert subnet()["MapPublicIpOnLaunch"] is False
    ec2.modify_subnet_attribute(SubnetId=sid, MapPublicIpOnLaunch={"Value": True})
    assert subnet()["MapPublicIpOnLaunch"] is True
    ec2.modify_subnet_attribute(SubnetId=sid, EnableResourceNameDnsARecordOnLaunch={"Value": True})
    ec2.modify_subnet_attribute(SubnetId=sid, PrivateDnsHostnameTypeOnLaunch="resource-name")
    options = subnet()["PrivateDnsNameOptionsOnLaunch"]
    assert options == {
        "HostnameType": "resource-name",
        "EnableResourceNameDnsARecord": True,
        "EnableResourceNameDnsAAAARecord": False,
    }
    code, _ = error_of(
        ec2.modify_subnet_attribute, SubnetId=sid, PrivateDnsHostnameTypeOnLaunch="fancy"
    )
    assert code == "InvalidParameterValue"
    code, _ = error_of(
        ec2.modify_subnet_attribute, SubnetId=sid, AssignIpv6AddressOnCreation={"Value": True}
    )
    assert code == "InvalidParameterValue"
    assert subnet()["AssignIpv6AddressOnCreation"] is False
    code, _ = error_of(ec2.modify_subnet_attribute, SubnetId=sid)
    assert code == "MissingParameter"


def test_default_vpc_deleted_and_created_again(ec2):
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    code, _ = error_of(ec2.create_default_vpc)
    assert code == "DefaultVpcAlreadyExists"
    code, _ = error_of(ec2.delete_vpc, VpcId=vpc["VpcId"])
    assert code == "DependencyViolation"  # its subnets first, as on EC2
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    for s in subnets["Subnets"]:
        ec2.delete_subnet(SubnetId=s["SubnetId"])
    ec2.delete_vpc(VpcId=vpc["VpcId"])
    assert ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"] == []
    attrs = ec2.describe_account_attributes(AttributeNames=["default-vpc"])
    assert attrs["AccountAttributes"][0]["AttributeValues"] == [{"AttributeValue": "none"}]
    code, _ = error_of(ec2.create_default_subnet, AvailabilityZone="us-east-1a")
    assert code == "DefaultVpcDoesNotExist"
    code, _ = error_of(ec2.create_security_group, GroupName="x", Description="x")
    assert code == "VPCIdNotSpecified"
    made = ec2.create_default_vpc()["Vpc"]
    assert made["IsDefault"] is True and made["CidrBlock"] == "172.31.0.0/16"
    again = ec2.describe_subnets(Filters=[{"Name": "defaultForAz", "Values": ["true"]}])
    assert len(again["Subnets"]) == 3
    assert {s["VpcId"] for s in again["Subnets"]} == {made["VpcId"]}
    code, _ = error_of(ec2.create_default_subnet, AvailabilityZone="us-east-1a")
    assert code == "DefaultSubnetAlreadyInAvailabilityZone"
    a = [s for s in again["Subnets"] if s["AvailabilityZone"] == "us-east-1a"][0]
    ec2.delete_subnet(SubnetId=a["SubnetId"])
    sub = ec2.create_default_subnet(AvailabilityZone="us-east-1a")["Subnet"]
    assert sub["DefaultForAz"] is True and sub["MapPublicIpOnLaunch"] is True
    assert sub["CidrBlock"] == a["CidrBlock"]
    # a group now goes into the new default VPC
    gid = ec2.create_security_group(GroupName="x", Description="x")["GroupId"]
    group = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    assert group["VpcId"] == made["VpcId"]


def test_cidrs_with_host_bits_are_normalised(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.250.1.0/16")["Vpc"]
    assert vpc["CidrBlock"] == "10.250.0.0/16"
    sub = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock="10.250.7.9/24")["Subnet"]
    assert sub["CidrBlock"] == "10.250.7.0/24"
    gid = ec2.create_security_group(GroupName="n", Description="n", VpcId=vpc["VpcId"])["GroupId"]
    perm = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    ec2.authorize_security_group_ingress(
        GroupId=gid, IpPermissions=[{**perm, "IpRanges": [{"CidrIp": "205.192.8.45/24"}]}]
    )
    (rule,) = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
    assert rule["IpRanges"] == [{"CidrIp": "205.192.8.0/24"}]
    # the same rule again, spelt either way, is a duplicate; revoking it either way works
    code, _ = error_of(
        ec2.authorize_security_group_ingress,
        GroupId=gid,
        IpPermissions=[{**perm, "IpRanges": [{"CidrIp": "205.192.8.0/24"}]}],
    )
    assert code == "InvalidPermission.Duplicate"
    ec2.revoke_security_group_ingress(
        GroupId=gid, IpPermissions=[{**perm, "IpRanges": [{"CidrIp": "205.192.8.77/24"}]}]
    )
    assert ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"] == []
    for bad in ("10.1.2", "10.1.2.3", "300.1.2.3/8"):
        code, _ = error_of(
            ec2.authorize_security_group_ingress,
            GroupId=gid,
            IpPermissions=[{**perm, "IpRanges": [{"CidrIp": bad}]}],
        )
        assert code == "InvalidParameterValue", bad


def _keygen(*args: str) -> str:
    return subprocess.run(["ssh-keygen", *args], check=True, capture_output=True, text=True).stdout


def _der_of(pem: str) -> bytes:
    return base64.b64decode("".join(x for x in pem.splitlines() if not x.startswith("-----")))


def test_import_key_pair_formats(ec2):
    with tempfile.TemporaryDirectory(prefix="stockade-keys-") as d:
        rsa, ed = os.path.join(d, "rsa"), os.path.join(d, "ed")
        _keygen("-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", rsa)
        _keygen("-q", "-t", "ed25519", "-N", "", "-f", ed)
        openssh = Path(rsa + ".pub").read_bytes()
        pkcs8 = _keygen("-e", "-m", "PKCS8", "-f", rsa + ".pub")
        pkcs1 = _keygen("-e", "-m", "PEM", "-f", rsa + ".pub")
        rfc = _keygen("-e", "-m", "RFC4716", "-f", rsa + ".pub")
        ed_line = Path(ed + ".pub").read_text()
        ed_sha = _keygen("-l", "-E", "sha256", "-f", ed + ".pub").split()[1][len("SHA256:") :]
    # EC2's fingerprint of an imported RSA key: the MD5 of its DER public key (SPKI)
    md5 = hashlib.md5(_der_of(pkcs8)).hexdigest()
    expected = ":".join(md5[i : i + 2] for i in range(0, 32, 2))
    spki_b64 = base64.b64encode(_der_of(pkcs8)).decode()
    for i, material in enumerate([openssh, pkcs8, pkcs1, rfc, spki_b64]):
        got = ec2.import_key_pair(KeyName=f"rsa-{i}", PublicKeyMaterial=material)
        assert got["KeyFingerprint"] == expected, i
    # ED25519 in OpenSSH and as a PEM SubjectPublicKeyInfo (built from the raw key)
    raw = base64.b64decode(ed_line.split()[1])[-32:]
    spki = bytes.fromhex("302a300506032b6570032100") + raw
    pem = "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki).decode()
    pem += "\n-----END PUBLIC KEY-----\n"
    for i, material in enumerate([ed_line, pem]):
        got = ec2.import_key_pair(KeyName=f"ed-{i}", PublicKeyMaterial=material)
        assert got["KeyFingerprint"].rstrip("=") == ed_sha, i
    keys = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["ed-*"]}])
    assert {k["KeyType"] for k in keys["KeyPairs"]} == {"ed25519"}
    pub = ec2.describe_key_pairs(KeyNames=["rsa-2"], IncludePublicKey=True)["KeyPairs"][0]
    assert pub["PublicKey"].split()[1] == openssh.split()[1].decode()
    bad = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    for material in (bad, pem.replace("MCow", "MCox"), "MIIBIjAN"):
        code, _ = error_of(ec2.import_key_pair, KeyName="bad", PublicKeyMaterial=material)
        assert code == "InvalidKey.Format"
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 7


def test_describe_instance_types(ec2):
    t3 = ec2.describe_instance_types(InstanceTypes=["t3.micro", "m5.large"])["InstanceTypes"]
    by_name = {t["InstanceType"]: t for t in t3}
    assert by_name["t3.micro"]["VCpuInfo"]["DefaultVCpus"] == 2
    assert by_name["t3.micro"]["MemoryInfo"]["SizeInMiB"] == 1024
    assert by_name["m5.large"]["MemoryInfo"]["SizeInMiB"] == 8192
    assert by_name["t3.micro"]["BurstablePerformanceSupported"] is True
    code, msg = error_of(ec2.describe_instance_types, InstanceTypes=["t3.micro", "z9.huge"])
    assert code == "InvalidInstanceType" and "z9.huge" in msg
    arm = ec2.describe_instance_types(
        Filters=[
            {"Name": "processor-info.supported-architecture", "Values": ["arm64"]},
            {"Name": "instance-type", "Values": ["m7g.*"]},
        ]
    )["InstanceTypes"]
    assert arm and all(t["InstanceType"].startswith("m7g.") for t in arm)
    pages = ec2.get_paginator("describe_instance_types").paginate(
        PaginationConfig={"PageSize": 100}
    )
    names = [t["InstanceType"] for page in pages for t in page["InstanceTypes"]]
    assert len(names) == len(set(names)) > 800
    # every type EC2 has can be launched
    iid = ec2.run_instances(
        ImageId="ami-05d0b1ac3c0f41e5a", InstanceType="c7i.2xlarge", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]
    got = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert got["InstanceType"] == "c7i.2xlarge"


def test_release_of_an_associated_address(ec2):
    def launch(**kw) -> str:
        return ec2.run_instances(ImageId="ami-05d0b1ac3c0f41e5a", MinCount=1, MaxCount=1, **kw)[
            "Instances"
        ][0]["InstanceId"]

    # in the default VPC, releasing disassociates first (EC2's ReleaseAddress)
    iid = launch()
    alloc = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=iid, AllocationId=alloc["AllocationId"])
    ec2.release_address(AllocationId=alloc["AllocationId"])
    assert ec2.describe_addresses()["Addresses"] == []
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst.get("PublicIpAddress") != alloc["PublicIp"]
    # in another VPC, it must be disassociated before
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.60.1.0/24")["Subnet"]["SubnetId"]
    other = launch(SubnetId=sub)
    alloc = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=other, AllocationId=alloc["AllocationId"])
    code, msg = error_of(ec2.release_address, AllocationId=alloc["AllocationId"])
    assert (code, msg) == ("InvalidIPAddress.InUse", f"Address {alloc['PublicIp']} is in use.")
    (kept,) = ec2.describe_addresses()["Addresses"]
    assert kept["InstanceId"] == other


def test_instance_options(ec2):
    (inst,) = ec2.run_instances(
        ImageId="ami-05d0b1ac3c0f41e5a", InstanceType="t3.micro", MinCount=1, MaxCount=1
    )["Instances"]
    iid = inst["InstanceId"]
    assert inst["MetadataOptions"]["HttpTokens"] == "optional"
    got = ec2.modify_instance_metadata_options(
        InstanceId=iid, HttpTokens="required", HttpPutResponseHopLimit=2
    )
    assert got["InstanceMetadataOptions"]["HttpTokens"] == "required"
    shown = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert shown["MetadataOptions"]["HttpTokens"] == "required"
    assert shown["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    code, _ = error_of(ec2.modify_instance_metadata_options, InstanceId=iid, HttpTokens="maybe")
    assert code == "InvalidParameterValue"
    code, _ = error_of(
        ec2.modify_instance_metadata_options, InstanceId=iid, HttpPutResponseHopLimit=65
    )
    assert code == "InvalidParameterValue"
    credits = ec2.describe_instance_credit_specifications(InstanceIds=[iid])
    assert credits["InstanceCreditSpecifications"] == [
        {"InstanceId": iid, "CpuCredits": "unlimited"}
    ]
    done = ec2.modify_instance_credit_specification(
        InstanceCreditSpecifications=[
            {"InstanceId": iid, "CpuCredits": "standard"},
            {"InstanceId": "i-0123456789abcdef0", "CpuCredits": "standard"},
        ]
    )
    assert done["SuccessfulInstanceCreditSpecifications"] == [{"InstanceId": iid}]
    (bad,) = done["UnsuccessfulInstanceCreditSpecifications"]
    assert bad["Error"]["Code"] == "InvalidInstanceID.NotFound"
    credits = ec2.describe_instance_credit_specifications(InstanceIds=[iid])
    assert credits["InstanceCreditSpecifications"][0]["CpuCredits"] == "standard"
    code, _ = error_of(ec2.modify_instance_placement, InstanceId=iid, Tenancy="dedicated")
    assert code == "IncorrectInstanceState"  # it must be stopped first
    ec2.stop_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_stopped").wait(
        InstanceIds=[iid], WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    assert ec2.modify_instance_placement(InstanceId=iid, Tenancy="dedicated")["Return"] is True
    shown = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert shown["Placement"]["Tenancy"] == "dedicated"


def test_address_attributes(ec2):
    alloc = ec2.allocate_address(Domain="vpc")
    aid = alloc["AllocationId"]
    (plain,) = ec2.describe_addresses_attribute(AllocationIds=[aid], Attribute="domain-name")[
        "Addresses"
    ]
    assert plain == {"PublicIp": alloc["PublicIp"], "AllocationId": aid}
    got = ec2.modify_address_attribute(AllocationId=aid, DomainName="www.example.com")
    assert got["Address"]["PtrRecord"] == "www.example.com"
    (named,) = ec2.describe_addresses_attribute(Attribute="domain-name")["Addresses"]
    assert named["PtrRecord"] == "www.example.com"
    code, _ = error_of(ec2.modify_address_attribute, AllocationId=aid, DomainName="a..b")
    assert code == "InvalidParameterValue"
    ec2.reset_address_attribute(AllocationId=aid, Attribute="domain-name")
    (plain,) = ec2.describe_addresses_attribute(AllocationIds=[aid])["Addresses"]
    assert "PtrRecord" not in plain


def test_filter_values_are_checked_as_ids(ec2):
    for name in ("group-id", "groupId"):
        code, msg = error_of(
            ec2.describe_security_groups, Filters=[{"Name": name, "Values": ["banana"]}]
        )
        assert code == "InvalidGroupId.Malformed" and "banana" in msg
    code, _ = error_of(
        ec2.describe_security_group_rules, Filters=[{"Name": "group-id", "Values": ["sg-x"]}]
    )
    assert code == "InvalidGroupId.Malformed"
    # a wildcard is a pattern, not an id
    found = ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": ["sg-*"]}])
    assert [g["GroupName"] for g in found["SecurityGroups"]] == ["default"]
    # a well-formed id that does not exist matches nothing
    none = ec2.describe_security_groups(
        Filters=[{"Name": "group-id", "Values": ["sg-0123456789abcdef0"]}]
    )
    assert none["SecurityGroups"] == []


def test_classic_authorize_with_host_bits(sqlite_server):
    import subprocess

    from conftest import BIN

    acct = sqlite_server.account()
    env = sqlite_server.env(acct)
    ran = subprocess.run(
        [str(BIN / "ec2-authorize"), "default", "-P", "tcp", "-p", "22", "-s", "205.192.8.45/24"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert "205.192.8.45/24" in ran.stdout  # the tool echoes the request, as EC2's did
    (g,) = sqlite_server.client(acct).describe_security_groups(GroupNames=["default"])[
        "SecurityGroups"
    ]
    cidrs = [r["CidrIp"] for p in g["IpPermissions"] for r in p["IpRanges"]]
    assert cidrs == ["205.192.8.0/24"]


def test_subnet_cidr_reservations(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"]
    sid = ec2.create_subnet(VpcId=vpc, CidrBlock="10.70.1.0/24")["Subnet"]["SubnetId"]
    made = ec2.create_subnet_cidr_reservation(
        SubnetId=sid,
        Cidr="10.70.1.17/28",
        ReservationType="prefix",
        Description="for prefixes",
        TagSpecifications=[
            {"ResourceType": "subnet-cidr-reservation", "Tags": [{"Key": "k", "Value": "v"}]}
        ],
    )["SubnetCidrReservation"]
    assert made["Cidr"] == "10.70.1.16/28" and made["ReservationType"] == "prefix"
    assert made["Tags"] == [{"Key": "k", "Value": "v"}]
    for cidr, kind in (
        ("10.70.1.20/30", "explicit"),
        ("10.71.0.0/28", "explicit"),
        ("10.70.1.64/28", "odd"),
    ):
        code, _ = error_of(
            ec2.create_subnet_cidr_reservation, SubnetId=sid, Cidr=cidr, ReservationType=kind
        )
        assert code in ("InvalidSubnetCidrReservation.Conflict", "InvalidParameterValue"), cidr
    got = ec2.get_subnet_cidr_reservations(SubnetId=sid)
    assert [r["SubnetCidrReservationId"] for r in got["SubnetIpv4CidrReservations"]] == [
        made["SubnetCidrReservationId"]
    ]
    assert got["SubnetIpv6CidrReservations"] == []
    none = ec2.get_subnet_cidr_reservations(
        SubnetId=sid, Filters=[{"Name": "reservationType", "Values": ["explicit"]}]
    )
    assert none["SubnetIpv4CidrReservations"] == []
    gone = ec2.delete_subnet_cidr_reservation(
        SubnetCidrReservationId=made["SubnetCidrReservationId"]
    )["DeletedSubnetCidrReservation"]
    assert gone["Cidr"] == "10.70.1.16/28"
    assert ec2.get_subnet_cidr_reservations(SubnetId=sid)["SubnetIpv4CidrReservations"] == []
    code, _ = error_of(
        ec2.delete_subnet_cidr_reservation,
        SubnetCidrReservationId=made["SubnetCidrReservationId"],
    )
    assert code == "InvalidSubnetCidrReservationID.NotFound"
