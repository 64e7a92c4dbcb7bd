"""Network interfaces, IPv6 blocks and managed prefix lists through boto3 against the real
server (SQLite and PostgreSQL): EC2's shapes and error codes, nothing stored by a failed
request."""

from __future__ import annotations

import ipaddress

import pytest
from botocore.exceptions import ClientError

from fuzzing import digest

POOL6 = ipaddress.ip_network("fd00:ec2::/32")


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["Error"]["Code"]


def refused(server, account, call, **kwargs) -> str:
    """The error code of a request that must change nothing stored."""
    before = digest(server.store, account.account_id)
    code = code_of(call, **kwargs)
    assert digest(server.store, account.account_id) == before, f"{code} changed what is stored"
    return code


@pytest.fixture
def net(ec2):
    """A VPC with IPv6, two subnets of one zone (the first with a /64) and a group."""
    vpc = ec2.create_vpc(CidrBlock="10.250.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
    block = ipaddress.ip_network(vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"])
    a = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock="10.250.1.0/24", AvailabilityZone="us-east-1a"
    )
    b = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock="10.250.2.0/24", AvailabilityZone="us-east-1a"
    )
    a, b = a["Subnet"]["SubnetId"], b["Subnet"]["SubnetId"]
    sub64 = str(list(block.subnets(new_prefix=64))[1])
    ec2.associate_subnet_cidr_block(SubnetId=a, Ipv6CidrBlock=sub64)
    g = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc["VpcId"])
    return {"vpc": vpc, "block": block, "a": a, "b": b, "sub64": sub64, "group": g["GroupId"]}


def test_a_vpc_with_ipv6_and_its_subnets(ec2, net):
    vpc, block = net["vpc"], net["block"]
    assert block.prefixlen == 56 and block.subnet_of(POOL6)
    assoc = vpc["Ipv6CidrBlockAssociationSet"][0]
    assert assoc["AssociationId"].startswith("vpc-cidr-assoc-")
    assert assoc["Ipv6CidrBlockState"]["State"] == "associated"
    (again,) = ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"]
    assert again["Ipv6CidrBlockAssociationSet"] == vpc["Ipv6CidrBlockAssociationSet"]
    (default,) = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
            {"Name": "group-name", "Values": ["default"]},
        ]
    )["SecurityGroups"]
    (egress,) = default["IpPermissionsEgress"]
    assert egress["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}]
    assert egress["Ipv6Ranges"] == [{"CidrIpv6": "::/0"}]
    plain = ec2.create_vpc(CidrBlock="10.251.0.0/16")["Vpc"]
    assert "Ipv6CidrBlockAssociationSet" not in plain or not plain["Ipv6CidrBlockAssociationSet"]
    (subnet,) = ec2.describe_subnets(SubnetIds=[net["a"]])["Subnets"]
    (s6,) = subnet["Ipv6CidrBlockAssociationSet"]
    assert s6["Ipv6CidrBlock"] == net["sub64"]
    # a second block for a subnet, a /60, a block outside the VPC's: refused
    assert code_of(
        ec2.associate_subnet_cidr_block, SubnetId=net["a"], Ipv6CidrBlock=net["sub64"]
    ) in (
        "InvalidParameterValue",
        "InvalidSubnet.Conflict",
    )
    assert (
        code_of(
            ec2.associate_subnet_cidr_block, SubnetId=net["b"], Ipv6CidrBlock=str(block.supernet(4))
        )
        == "InvalidSubnet.Range"
    )
    assert (
        code_of(ec2.associate_subnet_cidr_block, SubnetId=net["b"], Ipv6CidrBlock="2001:db8::/64")
        == "InvalidSubnet.Range"
    )
    # the VPC's block cannot go while a subnet uses it; the subnet's can
    assert code_of(ec2.disassociate_vpc_cidr_block, AssociationId=assoc["AssociationId"]) == (
        "DependencyViolation"
    )
    out = ec2.disassociate_subnet_cidr_block(AssociationId=s6["AssociationId"])
    assert out["Ipv6CidrBlockAssociation"]["Ipv6CidrBlockState"]["State"] == "disassociated"
    out = ec2.disassociate_vpc_cidr_block(AssociationId=assoc["AssociationId"])
    assert out["Ipv6CidrBlockAssociation"]["Ipv6CidrBlockState"]["State"] == "disassociated"
    # AssociateVpcCidrBlock gives a new one, and a secondary IPv4 block
    got = ec2.associate_vpc_cidr_block(VpcId=vpc["VpcId"], AmazonProvidedIpv6CidrBlock=True)
    assert ipaddress.ip_network(got["Ipv6CidrBlockAssociation"]["Ipv6CidrBlock"]).subnet_of(POOL6)
    got = ec2.associate_vpc_cidr_block(VpcId=vpc["VpcId"], CidrBlock="10.99.0.0/16")
    assert got["CidrBlockAssociation"]["CidrBlock"] == "10.99.0.0/16"
    # CreateSubnet in the secondary block, with an IPv6 /64 of the new IPv6 block
    new6 = ipaddress.ip_network(
        ec2.describe_vpcs(VpcIds=[vpc["VpcId"]])["Vpcs"][0]["Ipv6CidrBlockAssociationSet"][0][
            "Ipv6CidrBlock"
        ]
    )
    made = ec2.create_subnet(
        VpcId=vpc["VpcId"], CidrBlock="10.99.1.0/24", Ipv6CidrBlock=str(next(new6.subnets(8)))
    )["Subnet"]
    assert made["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"] == str(next(new6.subnets(8)))
    assert code_of(ec2.associate_vpc_cidr_block, VpcId=vpc["VpcId"], CidrBlock="10.250.0.0/20") == (
        "InvalidVpc.Range"
    )
    assert code_of(
        ec2.disassociate_vpc_cidr_block, AssociationId="vpc-cidr-assoc-0123456789abcdef0"
    ) == ("InvalidCidrBlockAssociationID.NotFound")


def test_interfaces_create_attach_detach_delete(ec2, net, server, account):
    eni = ec2.create_network_interface(
        SubnetId=net["b"],
        Groups=[net["group"]],
        Description="second",
        SecondaryPrivateIpAddressCount=2,
    )["NetworkInterface"]
    eid = eni["NetworkInterfaceId"]
    assert eni["Status"] == "available" and eni["Description"] == "second"
    assert [g["GroupId"] for g in eni["Groups"]] == [net["group"]]
    addresses = eni["PrivateIpAddresses"]
    assert [a["Primary"] for a in addresses] == [True, False, False]
    assert all(
        ipaddress.ip_address(a["PrivateIpAddress"]) in ipaddress.ip_network("10.250.2.0/24")
        for a in addresses
    )
    # without groups: the VPC's default group
    plain = ec2.create_network_interface(
        SubnetId=net["a"], PrivateIpAddress="10.250.1.77", Ipv6AddressCount=1
    )
    plain = plain["NetworkInterface"]
    assert plain["PrivateIpAddress"] == "10.250.1.77"
    assert plain["Groups"][0]["GroupName"] == "default"
    (six,) = plain["Ipv6Addresses"]
    assert ipaddress.ip_address(six["Ipv6Address"]) in ipaddress.ip_network(net["sub64"])

    inst = ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1, SubnetId=net["a"])
    iid = inst["Instances"][0]["InstanceId"]
    att = ec2.attach_network_interface(NetworkInterfaceId=eid, InstanceId=iid, DeviceIndex=1)
    assert att["AttachmentId"].startswith("eni-attach-")
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [iid]}]
    )
    assert sorted(n["Attachment"]["DeviceIndex"] for n in found["NetworkInterfaces"]) == [0, 1]
    (one,) = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"]
    assert {n["NetworkInterfaceId"] for n in one["NetworkInterfaces"]} >= {eid}
    attr = ec2.describe_network_interface_attribute(NetworkInterfaceId=eid, Attribute="attachment")
    assert attr["Attachment"]["AttachmentId"] == att["AttachmentId"]
    assert attr["Attachment"]["DeviceIndex"] == 1
    attr = ec2.describe_network_interface_attribute(NetworkInterfaceId=eid, Attribute="groupSet")
    assert [g["GroupId"] for g in attr["Groups"]] == [net["group"]]
    attr = ec2.describe_network_interface_attribute(NetworkInterfaceId=eid, Attribute="description")
    assert attr["Description"]["Value"] == "second"
    for f, v in (
        ("group-id", net["group"]),
        ("subnet-id", net["b"]),
        ("attachment.attachment-id", att["AttachmentId"]),
    ):
        got = ec2.describe_network_interfaces(Filters=[{"Name": f, "Values": [v]}])[
            "NetworkInterfaces"
        ]
        assert [n["NetworkInterfaceId"] for n in got] == [eid], f

    # EC2's errors, and nothing stored by them
    assert refused(server, account, ec2.delete_network_interface, NetworkInterfaceId=eid) == (
        "InvalidNetworkInterface.InUse"
    )
    assert (
        refused(
            server,
            account,
            ec2.attach_network_interface,
            NetworkInterfaceId=plain["NetworkInterfaceId"],
            InstanceId=iid,
            DeviceIndex=1,
        )
        == "InvalidParameterValue"
    )
    primary = [n for n in one["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0][0]
    assert refused(
        server,
        account,
        ec2.detach_network_interface,
        AttachmentId=primary["Attachment"]["AttachmentId"],
    ) == ("OperationNotPermitted")
    assert refused(
        server, account, ec2.detach_network_interface, AttachmentId="eni-attach-0123456789abcdef0"
    ) == ("InvalidAttachmentID.NotFound")
    assert (
        refused(
            server,
            account,
            ec2.describe_network_interface_attribute,
            NetworkInterfaceId=eid,
            Attribute="bogus",
        )
        == "InvalidParameterValue"
    )
    assert refused(
        server, account, ec2.delete_network_interface, NetworkInterfaceId="eni-0123456789abcdef0"
    ) == ("InvalidNetworkInterfaceID.NotFound")
    assert (
        refused(
            server,
            account,
            ec2.create_network_interface,
            SubnetId=net["b"],
            PrivateIpAddress="10.250.1.5",
        )
        == "InvalidParameterValue"
    )

    ec2.detach_network_interface(AttachmentId=att["AttachmentId"])
    (back,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eid])["NetworkInterfaces"]
    assert back["Status"] == "available" and "Attachment" not in back
    ec2.delete_network_interface(NetworkInterfaceId=eid)
    assert (
        code_of(ec2.describe_network_interfaces, NetworkInterfaceIds=[eid])
        == "InvalidNetworkInterfaceID.NotFound"
    )


def test_secondary_and_ipv6_addresses(ec2, net, server, account):
    eni = ec2.create_network_interface(SubnetId=net["a"])["NetworkInterface"]
    eid = eni["NetworkInterfaceId"]
    got = ec2.assign_private_ip_addresses(
        NetworkInterfaceId=eid, PrivateIpAddresses=["10.250.1.200"]
    )
    assert got["AssignedPrivateIpAddresses"] == [{"PrivateIpAddress": "10.250.1.200"}]
    got = ec2.assign_private_ip_addresses(NetworkInterfaceId=eid, SecondaryPrivateIpAddressCount=1)
    (auto,) = got["AssignedPrivateIpAddresses"]
    (now,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eid])["NetworkInterfaces"]
    assert [a["PrivateIpAddress"] for a in now["PrivateIpAddresses"][1:]] == [
        "10.250.1.200",
        auto["PrivateIpAddress"],
    ]
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "addresses.private-ip-address", "Values": ["10.250.1.200"]}]
    )["NetworkInterfaces"]
    assert [n["NetworkInterfaceId"] for n in found] == [eid]
    # an address another interface holds, the primary, one not assigned
    assert refused(
        server,
        account,
        ec2.create_network_interface,
        SubnetId=net["a"],
        PrivateIpAddress="10.250.1.200",
    ) == ("InvalidIPAddress.InUse")
    assert (
        refused(
            server,
            account,
            ec2.unassign_private_ip_addresses,
            NetworkInterfaceId=eid,
            PrivateIpAddresses=[eni["PrivateIpAddress"]],
        )
        == "InvalidParameterValue"
    )
    assert (
        refused(
            server,
            account,
            ec2.unassign_private_ip_addresses,
            NetworkInterfaceId=eid,
            PrivateIpAddresses=["10.250.1.201"],
        )
        == "InvalidParameterValue"
    )
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eid, PrivateIpAddresses=["10.250.1.200"])
    got = ec2.assign_ipv6_addresses(NetworkInterfaceId=eid, Ipv6AddressCount=2)
    assert len(got["AssignedIpv6Addresses"]) == 2
    wanted = str(ipaddress.ip_network(net["sub64"])[0x99])
    ec2.assign_ipv6_addresses(NetworkInterfaceId=eid, Ipv6Addresses=[wanted])
    (now,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eid])["NetworkInterfaces"]
    assert [a["Ipv6Address"] for a in now["Ipv6Addresses"]] == [
        *got["AssignedIpv6Addresses"],
        wanted,
    ]
    found = ec2.describe_network_interfaces(
        Filters=[{"Name": "ipv6-addresses.ipv6-address", "Values": [wanted]}]
    )["NetworkInterfaces"]
    assert [n["NetworkInterfaceId"] for n in found] == [eid]
    out = ec2.unassign_ipv6_addresses(NetworkInterfaceId=eid, Ipv6Addresses=[wanted])
    assert out["UnassignedIpv6Addresses"] == [wanted]
    other = ec2.create_network_interface(SubnetId=net["b"])["NetworkInterface"][
        "NetworkInterfaceId"
    ]
    assert refused(
        server, account, ec2.assign_ipv6_addresses, NetworkInterfaceId=other, Ipv6AddressCount=1
    ) == (
        "InvalidParameterValue"  # subnet b has no IPv6 block
    )
    assert (
        refused(
            server,
            account,
            ec2.assign_ipv6_addresses,
            NetworkInterfaceId=eid,
            Ipv6Addresses=["2001:db8::1"],
        )
        == "InvalidParameterValue"
    )


def test_run_instances_with_two_interfaces_and_ipv6(ec2, net, server, account):
    other = ec2.create_security_group(GroupName="db", Description="db", VpcId=net["vpc"]["VpcId"])[
        "GroupId"
    ]
    inst = ec2.run_instances(
        ImageId="ami-fba54092",
        MinCount=1,
        MaxCount=1,
        NetworkInterfaces=[
            {
                "DeviceIndex": 0,
                "SubnetId": net["a"],
                "Groups": [net["group"]],
                "Ipv6AddressCount": 1,
            },
            {
                "DeviceIndex": 1,
                "SubnetId": net["b"],
                "Groups": [other],
                "SecondaryPrivateIpAddressCount": 1,
            },
        ],
    )["Instances"][0]
    by_index = {n["Attachment"]["DeviceIndex"]: n for n in inst["NetworkInterfaces"]}
    assert sorted(by_index) == [0, 1]
    assert by_index[0]["SubnetId"] == net["a"] and by_index[1]["SubnetId"] == net["b"]
    assert [g["GroupId"] for g in by_index[0]["Groups"]] == [net["group"]]
    assert [g["GroupId"] for g in by_index[1]["Groups"]] == [other]
    assert len(by_index[0]["Ipv6Addresses"]) == 1 and len(by_index[1]["PrivateIpAddresses"]) == 2
    # the second interface was made with the instance: it goes with it
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    gone = ec2.describe_network_interfaces(Filters=[{"Name": "subnet-id", "Values": [net["b"]]}])
    assert gone["NetworkInterfaces"] == []
    two_zero = [{"DeviceIndex": 0, "SubnetId": net["a"]}, {"DeviceIndex": 0, "SubnetId": net["b"]}]
    assert (
        refused(
            server,
            account,
            ec2.run_instances,
            ImageId="ami-fba54092",
            MinCount=1,
            MaxCount=1,
            NetworkInterfaces=two_zero,
        )
        == "InvalidParameterValue"
    )
    far = ec2.create_subnet(
        VpcId=net["vpc"]["VpcId"], CidrBlock="10.250.3.0/24", AvailabilityZone="us-east-1b"
    )
    assert (
        refused(
            server,
            account,
            ec2.run_instances,
            ImageId="ami-fba54092",
            MinCount=1,
            MaxCount=1,
            NetworkInterfaces=[
                {"DeviceIndex": 0, "SubnetId": net["a"]},
                {"DeviceIndex": 1, "SubnetId": far["Subnet"]["SubnetId"]},
            ],
        )
        == "InvalidParameterCombination"
    )


def test_an_attached_interface_outlives_its_instance(ec2, net):
    eni = ec2.create_network_interface(SubnetId=net["b"])["NetworkInterface"]["NetworkInterfaceId"]
    iid = ec2.run_instances(ImageId="ami-fba54092", MinCount=1, MaxCount=1, SubnetId=net["a"])[
        "Instances"
    ][0]["InstanceId"]
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=iid, DeviceIndex=1)
    ec2.terminate_instances(InstanceIds=[iid])
    (left,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    assert left["Status"] == "available" and "Attachment" not in left


def test_managed_prefix_lists_as_rule_peers(ec2, net, server, account):
    made = ec2.create_managed_prefix_list(
        PrefixListName="office",
        MaxEntries=3,
        AddressFamily="IPv4",
        Entries=[
            {"Cidr": "192.168.1.130/32", "Description": "albert"},
            {"Cidr": "205.192.8.45/24"},
        ],
        TagSpecifications=[
            {"ResourceType": "prefix-list", "Tags": [{"Key": "team", "Value": "ops"}]}
        ],
    )["PrefixList"]
    pl = made["PrefixListId"]
    assert pl.startswith("pl-") and made["Version"] == 1 and made["State"] == "create-complete"
    assert made["Tags"] == [{"Key": "team", "Value": "ops"}]
    entries = ec2.get_managed_prefix_list_entries(PrefixListId=pl)["Entries"]
    assert {e["Cidr"] for e in entries} == {"192.168.1.130/32", "205.192.8.0/24"}  # normalised
    listed = ec2.describe_managed_prefix_lists(
        Filters=[{"Name": "prefix-list-name", "Values": ["office"]}]
    )
    assert [p["PrefixListId"] for p in listed["PrefixLists"]] == [pl]
    ec2.authorize_security_group_ingress(
        GroupId=net["group"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "PrefixListIds": [{"PrefixListId": pl, "Description": "office ssh"}],
            }
        ],
    )
    (g,) = ec2.describe_security_groups(GroupIds=[net["group"]])["SecurityGroups"]
    (perm,) = g["IpPermissions"]
    assert perm["PrefixListIds"] == [{"PrefixListId": pl, "Description": "office ssh"}]
    assoc = ec2.get_managed_prefix_list_associations(PrefixListId=pl)["PrefixListAssociations"]
    assert assoc == [{"ResourceId": net["group"], "ResourceOwner": account.account_id}]

    # version checks, limits, families, unknown lists: EC2's codes, nothing stored
    for kwargs, code in (
        (
            {"CurrentVersion": 7, "AddEntries": [{"Cidr": "10.0.0.0/8"}]},
            "PrefixListVersionMismatch",
        ),
        (
            {"CurrentVersion": 1, "AddEntries": [{"Cidr": "10.0.0.0/8"}, {"Cidr": "10.1.0.0/16"}]},
            "PrefixListMaxEntriesExceeded",
        ),
        ({"CurrentVersion": 1, "AddEntries": [{"Cidr": "2001:db8::/32"}]}, "InvalidParameterValue"),
        (
            {"CurrentVersion": 1, "RemoveEntries": [{"Cidr": "10.9.0.0/16"}]},
            "InvalidPrefixListModification",
        ),
    ):
        assert (
            refused(server, account, ec2.modify_managed_prefix_list, PrefixListId=pl, **kwargs)
            == code
        )
    assert (
        refused(server, account, ec2.delete_managed_prefix_list, PrefixListId=pl)
        == "PrefixListInUse"
    )
    assert (
        refused(
            server,
            account,
            ec2.authorize_security_group_ingress,
            GroupId=net["group"],
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 80,
                    "ToPort": 80,
                    "PrefixListIds": [{"PrefixListId": "pl-0123456789abcdef0"}],
                }
            ],
        )
        == "InvalidPrefixListID.NotFound"
    )

    out = ec2.modify_managed_prefix_list(
        PrefixListId=pl,
        CurrentVersion=1,
        AddEntries=[{"Cidr": "10.0.0.0/8"}],
        RemoveEntries=[{"Cidr": "205.192.8.0/24"}],
    )["PrefixList"]
    assert out["Version"] == 2
    entries = ec2.get_managed_prefix_list_entries(PrefixListId=pl)["Entries"]
    assert {e["Cidr"] for e in entries} == {"192.168.1.130/32", "10.0.0.0/8"}
    ec2.revoke_security_group_ingress(
        GroupId=net["group"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "PrefixListIds": [{"PrefixListId": pl}],
            }
        ],
    )
    gone = ec2.delete_managed_prefix_list(PrefixListId=pl)["PrefixList"]
    assert gone["State"] == "delete-complete"
    assert (
        code_of(ec2.get_managed_prefix_list_entries, PrefixListId=pl)
        == "InvalidPrefixListID.NotFound"
    )


def test_describe_prefix_lists_of_aws_services_is_empty(ec2):
    assert ec2.describe_prefix_lists()["PrefixLists"] == []
    got = ec2.describe_prefix_lists(
        Filters=[{"Name": "prefix-list-name", "Values": ["com.amazonaws.us-east-1.s3"]}]
    )
    assert got["PrefixLists"] == []
    assert (
        code_of(ec2.describe_prefix_lists, Filters=[{"Name": "bogus", "Values": ["x"]}])
        == "InvalidParameterValue"
    )


def test_several_instances_with_several_interfaces_in_one_subnet(ec2, net):
    """Every address is taken once (the fuzzer found a launch that gave one twice)."""
    made = ec2.run_instances(
        ImageId="ami-fba54092",
        MinCount=3,
        MaxCount=3,
        NetworkInterfaces=[
            {"DeviceIndex": 0, "SubnetId": net["a"]},
            {"DeviceIndex": 1, "SubnetId": net["a"], "SecondaryPrivateIpAddressCount": 1},
        ],
    )["Instances"]
    addresses = [
        a["PrivateIpAddress"]
        for i in made
        for n in i["NetworkInterfaces"]
        for a in n["PrivateIpAddresses"]
    ]
    assert len(addresses) == 9 and len(set(addresses)) == 9
