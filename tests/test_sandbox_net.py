"""Interfaces, IPv6 and prefix lists with real packets in one sandbox region (root, netns).

One sandbox (one host) and one VPC with IPv6 for the module: instance X has two
interfaces in two subnets, each with its own groups; a client instance P sits in the first
subnet; an outside client with an IPv6 address reaches X's IPv6 address through the
sandbox's internet. Probes retry until a deadline; nothing waits a fixed time.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest

from stockade.sandbox.hostd import instance_netns
from stockade.sandbox.region import ensure_outside
from stockade.store.db import Store

import netns
from conftest import running_sandbox, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
]

PORTS = (7070, 8080, 9090)
V6_CLIENT, V6_STRANGER = "2001:db8::130", "2001:db8::131"

# listeners on PORTS, IPv4 and IPv6 (a dual-stack socket each), answering "hello"
LISTENERS = (
    "#!/bin/sh\n"
    'exec python3 -c "\n'
    "import socket, threading\n"
    "def serve(port):\n"
    "    s = socket.socket(socket.AF_INET6)\n"
    "    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
    "    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind(('::', port))\n"
    "    s.listen(64)\n"
    "    while True:\n"
    "        c, _ = s.accept()\n"
    "        c.sendall(b'hello')\n"
    "        c.close()\n"
    f"for p in {PORTS!r}:\n"
    "    threading.Thread(target=serve, args=(p,)).start()\n"
    '"\n'
)


def connect_cmd(host: str, port: int) -> list[str]:
    """A connect that prints open / refused / timeout (IPv4 or IPv6 by the address)."""
    family = "socket.AF_INET6" if ":" in host else "socket.AF_INET"
    code = (
        "import socket\n"
        f"s=socket.socket({family}); s.settimeout(1.0)\n"
        "try:\n"
        f"  s.connect(({host!r},{port})); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError as e: print('timeout' if 'timed out' in str(e) else f'error {e}')\n"
    )
    return ["python3", "-c", code]


def until(fn, expected: str, what: str, timeout: float = 30) -> None:
    last: dict[str, str] = {}

    def check() -> bool:
        last["value"] = fn()
        return last["value"] == expected

    try:
        wait_until(check, timeout=timeout, what=what)
    except AssertionError:
        raise AssertionError(
            f"{what}: last saw {last.get('value')!r}, wanted {expected!r}"
        ) from None


class Net:
    """The module's account, VPC, subnets, groups and instances."""

    def __init__(self, box) -> None:
        import boto3

        from stockade import accounts

        self.box = box
        store = Store(f"sqlite:///{box.data_dir}/stockade.db")
        acct = accounts.create(store, f"n{os.urandom(4).hex()}")
        store.dispose()
        self.ec2 = boto3.client(
            "ec2",
            endpoint_url=box.endpoint,
            region_name="us-east-1",
            aws_access_key_id=acct.access_key_id,
            aws_secret_access_key=acct.secret_access_key,
        )
        ec2 = self.ec2
        vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]
        self.vpc = vpc["VpcId"]
        block = ipaddress.ip_network(vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"])
        six = list(block.subnets(new_prefix=64))
        self.a = self.subnet("10.50.1.0/24", str(six[1]))
        self.b = self.subnet("10.50.2.0/24", str(six[2]))
        self.ga = self.group("ga", 8080, "10.50.0.0/16")
        self.gb = self.group("gb", 9090, "10.50.0.0/16")
        self.gp = self.group("gp", None, None)
        self.pl = ec2.create_managed_prefix_list(
            PrefixListName="office",
            MaxEntries=5,
            AddressFamily="IPv4",
            Entries=[{"Cidr": "10.50.9.0/24"}],
        )["PrefixList"]["PrefixListId"]
        ec2.authorize_security_group_ingress(
            GroupId=self.ga,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 7070,
                    "ToPort": 7070,
                    "PrefixListIds": [{"PrefixListId": self.pl}],
                },
                {
                    "IpProtocol": "tcp",
                    "FromPort": 8080,
                    "ToPort": 8080,
                    "Ipv6Ranges": [{"CidrIpv6": f"{V6_CLIENT}/128"}],
                },
            ],
        )
        self.x = self.launch(
            [
                {"DeviceIndex": 0, "SubnetId": self.a, "Groups": [self.ga], "Ipv6AddressCount": 1},
                {"DeviceIndex": 1, "SubnetId": self.b, "Groups": [self.gb]},
            ]
        )
        self.p = self.launch([{"DeviceIndex": 0, "SubnetId": self.a, "Groups": [self.gp]}])

    def subnet(self, cidr: str, ipv6: str) -> str:
        sid = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock=cidr, AvailabilityZone="us-east-1a")[
            "Subnet"
        ]["SubnetId"]
        self.ec2.associate_subnet_cidr_block(SubnetId=sid, Ipv6CidrBlock=ipv6)
        return sid

    def group(self, name: str, port: int | None, cidr: str | None) -> str:
        gid = self.ec2.create_security_group(GroupName=name, Description=name, VpcId=self.vpc)[
            "GroupId"
        ]
        if port is not None:
            self.ec2.authorize_security_group_ingress(
                GroupId=gid, IpProtocol="tcp", FromPort=port, ToPort=port, CidrIp=cidr
            )
        return gid

    def launch(self, interfaces: list[dict]) -> dict:
        iid = self.ec2.run_instances(
            ImageId="ami-fba54092",
            MinCount=1,
            MaxCount=1,
            UserData=LISTENERS,
            NetworkInterfaces=interfaces,
        )["Instances"][0]["InstanceId"]
        wait_until(lambda: self.describe(iid)["State"]["Name"] == "running", 60, f"{iid} to run")
        return self.describe(iid)

    def describe(self, iid: str) -> dict:
        return self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]

    def eni(self, inst: dict, index: int) -> dict:
        (found,) = [n for n in inst["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == index]
        return found

    def run(self, ns: str, host: str, port: int) -> str:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, *connect_cmd(host, port)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip() or out.stderr.strip()

    def from_p(self, host: str, port: int) -> str:
        return self.run(instance_netns(self.box.prefix, self.p["InstanceId"]), host, port)

    def from_outside(self, source: str, host: str, port: int) -> str:
        return self.run(ensure_outside(self.box.prefix, source), host, port)


@pytest.fixture(scope="module")
def lab():
    with running_sandbox(hosts=1, tag="skn") as box:
        yield Net(box)


def test_two_interfaces_in_two_subnets_have_two_sets_of_groups(lab):
    eth0 = lab.eni(lab.x, 0)["PrivateIpAddress"]
    eth1 = lab.eni(lab.x, 1)["PrivateIpAddress"]
    assert ipaddress.ip_address(eth0) in ipaddress.ip_network("10.50.1.0/24")
    assert ipaddress.ip_address(eth1) in ipaddress.ip_network("10.50.2.0/24")
    until(lambda: lab.from_p(eth0, 8080), "open", "eth0 (ga) tcp/8080")
    until(lambda: lab.from_p(eth1, 9090), "open", "eth1 (gb) tcp/9090")
    assert lab.from_p(eth0, 9090) == "timeout"  # gb's port, not eth0's
    assert lab.from_p(eth1, 8080) == "timeout"  # ga's port, not eth1's
    # the groups of one interface change, the other's stay
    lab.ec2.modify_network_interface_attribute(
        NetworkInterfaceId=lab.eni(lab.x, 1)["NetworkInterfaceId"], Groups=[lab.ga]
    )
    until(lambda: lab.from_p(eth1, 8080), "open", "eth1 now in ga")
    until(lambda: lab.from_p(eth1, 9090), "timeout", "eth1 no longer in gb")
    lab.ec2.modify_network_interface_attribute(
        NetworkInterfaceId=lab.eni(lab.x, 1)["NetworkInterfaceId"], Groups=[lab.gb]
    )
    until(lambda: lab.from_p(eth1, 9090), "open", "eth1 back in gb")


def test_attach_and_detach_at_runtime_plumb_and_unplumb(lab):
    ec2 = lab.ec2
    eni = ec2.create_network_interface(SubnetId=lab.b, Groups=[lab.gb])["NetworkInterface"]
    ip = eni["PrivateIpAddress"]
    assert lab.from_p(ip, 9090) != "open"
    att = ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=lab.x["InstanceId"], DeviceIndex=2
    )["AttachmentId"]
    ns = instance_netns(lab.box.prefix, lab.x["InstanceId"])
    until(lambda: lab.from_p(ip, 9090), "open", "the attached interface serves")
    shown = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", "-o", "addr", "show", "eth2"],
        capture_output=True,
        text=True,
    ).stdout
    assert f"inet {ip}/24" in shown
    assert lab.from_p(ip, 8080) == "timeout"
    ec2.detach_network_interface(AttachmentId=att)
    until(lambda: lab.from_p(ip, 9090), "timeout", "the detached interface is gone")

    def unplumbed() -> bool:
        r = subprocess.run(
            ["ip", "netns", "exec", ns, "ip", "link", "show", "eth2"],
            capture_output=True,
            text=True,
        )
        return r.returncode != 0

    wait_until(unplumbed, 30, "eth2 to leave the instance")
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])


def test_ipv6_from_the_internet_follows_ipv6_rules(lab):
    (six,) = [a["Ipv6Address"] for a in lab.eni(lab.x, 0)["Ipv6Addresses"]]
    ns = instance_netns(lab.box.prefix, lab.x["InstanceId"])
    shown = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", "-6", "-o", "addr", "show", "eth0"],
        capture_output=True,
        text=True,
    ).stdout
    assert six in shown
    until(lambda: lab.from_outside(V6_CLIENT, six, 8080), "open", "IPv6 client tcp/8080")
    assert lab.from_outside(V6_STRANGER, six, 8080) == "timeout"
    assert lab.from_outside(V6_CLIENT, six, 9090) == "timeout"
    lab.ec2.revoke_security_group_ingress(
        GroupId=lab.ga,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "Ipv6Ranges": [{"CidrIpv6": f"{V6_CLIENT}/128"}],
            }
        ],
    )
    until(lambda: lab.from_outside(V6_CLIENT, six, 8080), "timeout", "the IPv6 rule revoked")


def test_a_prefix_list_rule_follows_modify_managed_prefix_list(lab):
    eth0 = lab.eni(lab.x, 0)["PrivateIpAddress"]
    p_ip = lab.p["PrivateIpAddress"]
    assert lab.from_p(eth0, 7070) == "timeout"
    version = lab.ec2.describe_managed_prefix_lists(PrefixListIds=[lab.pl])["PrefixLists"][0][
        "Version"
    ]
    lab.ec2.modify_managed_prefix_list(
        PrefixListId=lab.pl, CurrentVersion=version, AddEntries=[{"Cidr": f"{p_ip}/32"}]
    )
    until(lambda: lab.from_p(eth0, 7070), "open", "P added to the prefix list")
    lab.ec2.modify_managed_prefix_list(
        PrefixListId=lab.pl, CurrentVersion=version + 1, RemoveEntries=[{"Cidr": f"{p_ip}/32"}]
    )
    until(lambda: lab.from_p(eth0, 7070), "timeout", "P removed from the prefix list")
