"""The Elastic IP commands: ec2-allocate-address, ec2-associate-address,
ec2-disassociate-address, ec2-release-address and ec2-describe-addresses.

Seed 000 (../shared/seeds/000) is the spec: "Request a new static IP address:
``ADDRESS xx.xx.xx.xx``", then ``ec2-associate-address -i i-yyyyyy xx.xx.xx.xx``. Every
ADDRESS line starts with the public IP, as there; the columns after it are the later
ec2-api-tools' (which euca2ools' compatible euca-describe-addresses prints in the same
order: eucalyptus/euca2ools, euca2ools/commands/ec2/describeaddresses.py).

An address is named by its IP (seed 000) or by its id (``-a eipalloc-…`` /
``-a eipassoc-…``, which also work in the IP's place).
"""

from __future__ import annotations

import argparse
from typing import Any

from stockade.classic.core import Command, Context, UsageError, add_filter_option, api_filters

# ADDRESS | public IP (000) | instance | domain | allocation id | association id |
# network interface | private IP.
DESCRIBE_LAYOUT = (
    "PublicIp",
    "InstanceId",
    "Domain",
    "AllocationId",
    "AssociationId",
    "NetworkInterfaceId",
    "PrivateIpAddress",
)


def address_columns(addr: dict[str, Any]) -> tuple[Any, ...]:
    return (
        addr.get("PublicIp"),
        addr.get("InstanceId"),
        addr.get("Domain") or "standard",
        addr.get("AllocationId"),
        addr.get("AssociationId"),
        addr.get("NetworkInterfaceId"),
        addr.get("PrivateIpAddress"),
    )


def describe(ctx: Context, **params: Any) -> dict[str, Any] | None:
    found = ctx.call("DescribeAddresses", **params).get("Addresses") or []
    return found[0] if found else None


# --- ec2-allocate-address ----------------------------------------------------------------


def _allocate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-d",
        "--domain",
        choices=("vpc", "standard"),
        help="vpc (the default; Stockade's addresses are all VPC addresses)",
    )


def _allocate(ctx: Context, a: argparse.Namespace) -> None:
    params = {"Domain": a.domain} if a.domain else {}
    reply = ctx.call("AllocateAddress", **params)
    # Seed 000's `ADDRESS xx.xx.xx.xx`, then the describe line's next columns: no instance
    # yet, the domain, the allocation id.
    ctx.out.record(
        "ADDRESS",
        reply.get("PublicIp"),
        "",
        reply.get("Domain") or "vpc",
        reply.get("AllocationId"),
    )


ALLOCATE_ADDRESS = Command(
    name="ec2-allocate-address",
    aliases=("ec2allocaddr",),
    summary="Allocate an Elastic IP address.",
    arguments=_allocate_arguments,
    run=_allocate,
    layouts={"ADDRESS": DESCRIBE_LAYOUT[:4]},
)


# --- ec2-associate-address ---------------------------------------------------------------


def _associate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", nargs="?", metavar="IP", help="the Elastic IP (or its eipalloc- id)")
    p.add_argument("-a", "--allocation-id", metavar="ALLOCATION", help="the address's eipalloc- id")
    p.add_argument("-i", "--instance", metavar="INSTANCE", help="the instance to give it to")
    p.add_argument(
        "-n", "--network-interface", metavar="ENI", help="the network interface to give it to"
    )
    p.add_argument(
        "-p", "--private-ip-address", metavar="IP", help="the interface's private IP to map to"
    )
    p.add_argument(
        "--allow-reassociation",
        action="store_true",
        help="take the address from where it is associated now",
    )


def which_address(a: argparse.Namespace, id_prefix: str, id_flag: str) -> dict[str, str]:
    """IP positional or -a id (an id also works positionally): the API parameter."""
    given = getattr(a, id_flag)
    if a.address and given:
        raise UsageError("give the IP address or -a, not both")
    if given:
        return {"id": given}
    if not a.address:
        raise UsageError("which address? give its IP, or -a with its id")
    if a.address.startswith(id_prefix):
        return {"id": a.address}
    return {"ip": a.address}


def _associate(ctx: Context, a: argparse.Namespace) -> None:
    if bool(a.instance) == bool(a.network_interface):
        raise UsageError("give the instance (-i INSTANCE) or the network interface (-n ENI)")
    target = which_address(a, "eipalloc-", "allocation_id")
    params: dict[str, Any] = {}
    if "id" in target:
        params["AllocationId"] = target["id"]
    else:
        params["PublicIp"] = target["ip"]
    if a.instance:
        params["InstanceId"] = a.instance
    else:
        params["NetworkInterfaceId"] = a.network_interface
    if a.private_ip_address:
        params["PrivateIpAddress"] = a.private_ip_address
    if a.allow_reassociation:
        params["AllowReassociation"] = True
    reply = ctx.call("AssociateAddress", **params)
    association = reply.get("AssociationId")
    # The reply has only the association id: the rest of the line is the address as it now is.
    lookup = {"AllocationIds": [target["id"]]} if "id" in target else {"PublicIps": [target["ip"]]}
    addr = describe(ctx, **lookup) or {}
    ctx.out.record(
        "ADDRESS",
        addr.get("PublicIp") or target.get("ip"),
        addr.get("InstanceId") or a.instance,
        addr.get("AllocationId") or target.get("id"),
        association,
    )


ASSOCIATE_ADDRESS = Command(
    name="ec2-associate-address",
    aliases=("ec2assocaddr",),
    summary="Associate an Elastic IP address with an instance (or a network interface).",
    arguments=_associate_arguments,
    run=_associate,
    layouts={"ADDRESS": ("PublicIp", "InstanceId", "AllocationId", "AssociationId")},
    epilog="examples:\n  ec2-associate-address -i i-0123456789abcdef0 198.18.0.7"
    "\n  ec2assocaddr -i i-0123456789abcdef0 -a eipalloc-0123456789abcdef0",
)


# --- ec2-disassociate-address / ec2-release-address --------------------------------------
#
# ADDRESS<TAB>IP, as seed 000 names addresses; when the address was named by an id, the IP
# column is empty and the id follows it.


def _disassociate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", nargs="?", metavar="IP", help="the Elastic IP")
    p.add_argument("-a", "--association-id", metavar="ASSOCIATION", help="the eipassoc- id")


def _disassociate(ctx: Context, a: argparse.Namespace) -> None:
    target = which_address(a, "eipassoc-", "association_id")
    if "id" in target:
        ctx.call("DisassociateAddress", AssociationId=target["id"])
        ctx.out.record("ADDRESS", "", target["id"])
    else:
        ctx.call("DisassociateAddress", PublicIp=target["ip"])
        ctx.out.record("ADDRESS", target["ip"])


DISASSOCIATE_ADDRESS = Command(
    name="ec2-disassociate-address",
    aliases=("ec2disaddr",),
    summary="Take an Elastic IP address away from its instance.",
    arguments=_disassociate_arguments,
    run=_disassociate,
    layouts={"ADDRESS": ("PublicIp", "AssociationId")},
)


def _release_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", nargs="?", metavar="IP", help="the Elastic IP")
    p.add_argument("-a", "--allocation-id", metavar="ALLOCATION", help="the eipalloc- id")


def _release(ctx: Context, a: argparse.Namespace) -> None:
    target = which_address(a, "eipalloc-", "allocation_id")
    if "id" in target:
        ctx.call("ReleaseAddress", AllocationId=target["id"])
        ctx.out.record("ADDRESS", "", target["id"])
    else:
        ctx.call("ReleaseAddress", PublicIp=target["ip"])
        ctx.out.record("ADDRESS", target["ip"])


RELEASE_ADDRESS = Command(
    name="ec2-release-address",
    aliases=("ec2reladdr",),
    summary="Release an Elastic IP address.",
    arguments=_release_arguments,
    run=_release,
    layouts={"ADDRESS": ("PublicIp", "AllocationId")},
)


# --- ec2-describe-addresses --------------------------------------------------------------


def _describe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "addresses",
        nargs="*",
        metavar="ADDRESS",
        help="Elastic IPs or eipalloc- ids (default: all)",
    )
    add_filter_option(p)


def _describe(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    ids = [x for x in a.addresses if x.startswith("eipalloc-")]
    ips = [x for x in a.addresses if not x.startswith("eipalloc-")]
    if ids:
        params["AllocationIds"] = ids
    if ips:
        params["PublicIps"] = ips
    if a.filters:
        params["Filters"] = api_filters(a.filters)
    for addr in ctx.call("DescribeAddresses", **params).get("Addresses") or []:
        ctx.out.record("ADDRESS", *address_columns(addr))


DESCRIBE_ADDRESSES = Command(
    name="ec2-describe-addresses",
    aliases=("ec2daddr",),
    summary="Describe Elastic IP addresses.",
    arguments=_describe_arguments,
    run=_describe,
    layouts={"ADDRESS": DESCRIBE_LAYOUT},
)
