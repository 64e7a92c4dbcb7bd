"""Elastic IPs through boto3 against the real server (SQLite and PostgreSQL)."""

from __future__ import annotations

import ipaddress

import pytest
from botocore.exceptions import ClientError

POOL = ipaddress.ip_network("198.18.0.0/15")
MISSING_ALLOC = "eipalloc-0123456789abcdef0"
MISSING_ASSOC = "eipassoc-0123456789abcdef0"


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def launch(ec2, n: int = 1) -> list[str]:
    made = ec2.run_instances(ImageId="ami-fba54092", MinCount=n, MaxCount=n)["Instances"]
    return [i["InstanceId"] for i in made]


def inst(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def addr(ec2, allocation_id: str) -> dict:
    return ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]


def test_allocate_describe_release_and_the_limit(ec2, account):
    made = [ec2.allocate_address(Domain="vpc") for _ in range(5)]
    for a in made:
        assert a["AllocationId"].startswith("eipalloc-") and a["Domain"] == "vpc"
        assert ipaddress.ip_address(a["PublicIp"]) in POOL
        assert a["PublicIpv4Pool"] == "amazon" and a["NetworkBorderGroup"] == "us-east-1"
    assert len({a["PublicIp"] for a in made}) == 5
    code, msg = error_of(ec2.allocate_address, Domain="vpc")
    assert code == "AddressLimitExceeded"
    assert msg == "The maximum number of addresses has been reached."
    listed = ec2.describe_addresses()["Addresses"]
    assert sorted(a["AllocationId"] for a in listed) == sorted(a["AllocationId"] for a in made)
    (one,) = ec2.describe_addresses(PublicIps=[made[2]["PublicIp"]])["Addresses"]
    assert one["AllocationId"] == made[2]["AllocationId"] and "AssociationId" not in one
    ec2.release_address(AllocationId=made[0]["AllocationId"])
    ec2.release_address(PublicIp=made[1]["PublicIp"])
    code, msg = error_of(ec2.release_address, AllocationId=made[0]["AllocationId"])
    assert code == "InvalidAllocationID.NotFound" and made[0]["AllocationId"] in msg
    assert error_of(ec2.release_address, PublicIp=made[1]["PublicIp"])[0] == (
        "InvalidAddress.NotFound"
    )
    assert len(ec2.describe_addresses()["Addresses"]) == 3
    ec2.allocate_address(Domain="vpc")  # room again
    attrs = ec2.describe_account_attributes(AttributeNames=["vpc-max-elastic-ips"])
    assert attrs["AccountAttributes"][0]["AttributeValues"] == [{"AttributeValue": "5"}]


def test_associate_reassociate_disassociate(ec2, account):
    a, b = launch(ec2, 2)
    a_pool = inst(ec2, a)["PublicIpAddress"]
    eip = ec2.allocate_address(Domain="vpc")
    alloc, ip = eip["AllocationId"], eip["PublicIp"]
    # never an address someone holds
    assert ip not in {inst(ec2, a)["PublicIpAddress"], inst(ec2, b)["PublicIpAddress"]}
    assoc = ec2.associate_address(InstanceId=a, AllocationId=alloc)["AssociationId"]
    assert assoc.startswith("eipassoc-")
    got = inst(ec2, a)
    assert got["PublicIpAddress"] == ip
    assert got["PublicDnsName"] == f"ec2-{ip.replace('.', '-')}.compute-1.stockade.test"
    nic = got["NetworkInterfaces"][0]
    assert nic["Association"]["IpOwnerId"] == account.account_id
    shown = addr(ec2, alloc)
    assert shown["AssociationId"] == assoc and shown["InstanceId"] == a
    assert shown["NetworkInterfaceId"] == nic["NetworkInterfaceId"]
    assert shown["PrivateIpAddress"] == got["PrivateIpAddress"]
    assert shown["NetworkInterfaceOwnerId"] == account.account_id
    (eni,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[nic["NetworkInterfaceId"]])[
        "NetworkInterfaces"
    ]
    assert eni["Association"]["AllocationId"] == alloc
    assert eni["Association"]["AssociationId"] == assoc
    # the pool address a gave up is free: an instance may get it again
    assert a_pool not in {i["PublicIpAddress"] for i in (inst(ec2, a), inst(ec2, b))}
    # associating again with the same instance changes nothing
    assert ec2.associate_address(InstanceId=a, AllocationId=alloc)["AssociationId"] == assoc
    # moving it needs AllowReassociation
    code, msg = error_of(ec2.associate_address, InstanceId=b, AllocationId=alloc)
    assert code == "Resource.AlreadyAssociated" and alloc in msg
    assert inst(ec2, a)["PublicIpAddress"] == ip
    moved = ec2.associate_address(InstanceId=b, AllocationId=alloc, AllowReassociation=True)
    assert moved["AssociationId"] != assoc
    assert inst(ec2, b)["PublicIpAddress"] == ip
    fresh = inst(ec2, a)["PublicIpAddress"]  # a got a pool address back
    assert fresh and fresh != ip and ipaddress.ip_address(fresh) in POOL
    assert addr(ec2, alloc)["InstanceId"] == b
    # the old association is gone
    code, _ = error_of(ec2.disassociate_address, AssociationId=assoc)
    assert code == "InvalidAssociationID.NotFound"
    # (releasing an associated address: tests/test_api_surface.py)
    ec2.disassociate_address(AssociationId=moved["AssociationId"])
    back = inst(ec2, b)["PublicIpAddress"]
    assert back and back != ip and ipaddress.ip_address(back) in POOL
    assert "AssociationId" not in addr(ec2, alloc)
    # by public IP and network interface id
    eni_b = inst(ec2, b)["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.associate_address(PublicIp=ip, NetworkInterfaceId=eni_b)
    assert inst(ec2, b)["PublicIpAddress"] == ip
    ec2.disassociate_address(PublicIp=ip)
    ec2.disassociate_address(PublicIp=ip)  # not associated: nothing to do
    ec2.release_address(AllocationId=alloc)
    publics = [inst(ec2, i)["PublicIpAddress"] for i in (a, b)]
    assert len(set(publics)) == 2


def test_a_second_elastic_ip_replaces_the_first(ec2):
    (a,) = launch(ec2)
    first = ec2.allocate_address(Domain="vpc")
    second = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=a, AllocationId=first["AllocationId"])
    ec2.associate_address(InstanceId=a, AllocationId=second["AllocationId"])
    assert inst(ec2, a)["PublicIpAddress"] == second["PublicIp"]
    assert "InstanceId" not in addr(ec2, first["AllocationId"])
    ec2.release_address(AllocationId=first["AllocationId"])


def test_elastic_ip_on_a_stopped_instance(ec2):
    (a,) = launch(ec2)
    ec2.stop_instances(InstanceIds=[a])
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(InstanceId=a, AllocationId=eip["AllocationId"])
    assert inst(ec2, a)["PublicIpAddress"] == eip["PublicIp"]
    ec2.disassociate_address(PublicIp=eip["PublicIp"])
    # stopped: no pool address comes back until it starts
    assert "PublicIpAddress" not in inst(ec2, a)
    ec2.start_instances(InstanceIds=[a])
    assert ipaddress.ip_address(inst(ec2, a)["PublicIpAddress"]) in POOL


def test_associate_errors_change_nothing(ec2):
    a, b = launch(ec2, 2)
    eip = ec2.allocate_address(Domain="vpc")
    alloc = eip["AllocationId"]
    before = inst(ec2, a)["PublicIpAddress"]
    cases = [
        ({"AllocationId": MISSING_ALLOC, "InstanceId": a}, "InvalidAllocationID.NotFound"),
        ({"AllocationId": "eipalloc-zz", "InstanceId": a}, "InvalidAllocationID.Malformed"),
        ({"PublicIp": "203.0.113.9", "InstanceId": a}, "InvalidAddress.NotFound"),
        (
            {"AllocationId": alloc, "InstanceId": "i-0123456789abcdef0"},
            "InvalidInstanceID.NotFound",
        ),
        (
            {"AllocationId": alloc, "NetworkInterfaceId": "eni-0123456789abcdef0"},
            "InvalidNetworkInterfaceID.NotFound",
        ),
        (
            {
                "AllocationId": alloc,
                "InstanceId": a,
                "NetworkInterfaceId": "eni-0123456789abcdef0",
            },
            "InvalidParameterCombination",
        ),
        ({"AllocationId": alloc}, "MissingParameter"),
        (
            {"AllocationId": alloc, "InstanceId": a, "PrivateIpAddress": "172.31.9.9"},
            "InvalidParameterValue",
        ),
    ]
    for kw, code in cases:
        assert error_of(ec2.associate_address, **kw)[0] == code, kw
    assert inst(ec2, a)["PublicIpAddress"] == before
    assert "AssociationId" not in addr(ec2, alloc)
    ec2.terminate_instances(InstanceIds=[b])
    code, _ = error_of(ec2.associate_address, AllocationId=alloc, InstanceId=b)
    assert code == "IncorrectInstanceState"
    assert error_of(ec2.disassociate_address, AssociationId=MISSING_ASSOC)[0] == (
        "InvalidAssociationID.NotFound"
    )
    assert error_of(ec2.disassociate_address, AssociationId="eipassoc-x")[0] == (
        "InvalidAssociationID.Malformed"
    )
    assert error_of(ec2.describe_addresses, AllocationIds=[MISSING_ALLOC])[0] == (
        "InvalidAllocationID.NotFound"
    )
    assert error_of(ec2.describe_addresses, PublicIps=["203.0.113.9"])[0] == (
        "InvalidAddress.NotFound"
    )


def test_describe_address_filters(ec2):
    a, _b = launch(ec2, 2)
    used = ec2.allocate_address(Domain="vpc")
    spare = ec2.allocate_address(Domain="vpc")
    assoc = ec2.associate_address(InstanceId=a, AllocationId=used["AllocationId"])
    got = inst(ec2, a)
    eni = got["NetworkInterfaces"][0]["NetworkInterfaceId"]
    ec2.create_tags(Resources=[spare["AllocationId"]], Tags=[{"Key": "role", "Value": "spare"}])

    def ids(name: str, *values: str) -> list[str]:
        found = ec2.describe_addresses(Filters=[{"Name": name, "Values": list(values)}])
        return sorted(x["AllocationId"] for x in found["Addresses"])

    both = sorted([used["AllocationId"], spare["AllocationId"]])
    assert ids("allocation-id", used["AllocationId"]) == [used["AllocationId"]]
    assert ids("association-id", assoc["AssociationId"]) == [used["AllocationId"]]
    assert ids("instance-id", a) == [used["AllocationId"]]
    assert ids("network-interface-id", eni) == [used["AllocationId"]]
    assert ids("public-ip", spare["PublicIp"]) == [spare["AllocationId"]]
    assert ids("private-ip-address", got["PrivateIpAddress"]) == [used["AllocationId"]]
    assert ids("domain", "vpc") == both
    assert ids("domain", "standard") == []
    assert ids("tag:role", "spare") == [spare["AllocationId"]]
    assert error_of(ec2.describe_addresses, Filters=[{"Name": "nope", "Values": ["1"]}])[0] == (
        "InvalidParameterValue"
    )
