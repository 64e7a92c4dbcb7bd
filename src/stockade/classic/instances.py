"""The instance commands: ec2-run-instances, ec2-describe-instances, and the state changes
ec2-terminate-instances, ec2-stop-instances, ec2-start-instances, ec2-reboot-instances.

Output follows seed 002 (../shared/seeds/002, the EC2 developer guide's transcripts of the
old Amazon ec2-api-tools) where it shows a line; the rest of each line follows the later
ec2-api-tools. The seed's copy collapsed runs of whitespace, so its empty columns are gone:
its pending instance ``INSTANCE i-cfd732a6 ami-eca54085 pending 0 m1.small
2007-07-11T16:40:44+0000  us-east-1c`` has empty public DNS, private DNS, key name and
product-code columns between the words that are left.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from stockade.classic.core import (
    Command,
    Context,
    Failure,
    add_filter_option,
    api_filters,
)

# --- the INSTANCE line -------------------------------------------------------------------
#
# The column order of the ec2-api-tools' INSTANCE line (ec2-describe-instances and
# ec2-run-instances print the same line), as the tools' reference lists it under "Output"
# and as euca2ools re-implements it for its compatible euca-describe-instances
# (eucalyptus/euca2ools, euca2ools/commands/ec2/__init__.py, print_instance). Seed 002
# fixes the first eleven: id, AMI, public DNS (its ec2din line), private DNS (empty in
# both of its lines), state, key name (empty), AMI launch index, product codes (empty),
# type, launch time (`2007-07-11T16:40:44+0000`), zone. "License" has had no API field
# since the tools printed it: it stays empty. euca2ools' extra trailing architecture
# column is its own addition and is left out.
INSTANCE_COLUMNS = (
    "InstanceId",
    "ImageId",
    "PublicDnsName",
    "PrivateDnsName",
    "State",
    "KeyName",
    "AmiLaunchIndex",
    "ProductCodes",
    "InstanceType",
    "LaunchTime",
    "AvailabilityZone",
    "KernelId",
    "RamdiskId",
    "Platform",
    "Monitoring",
    "PublicIpAddress",
    "PrivateIpAddress",
    "VpcId",
    "SubnetId",
    "RootDeviceType",
    "InstanceLifecycle",
    "SpotInstanceRequestId",
    "License",
    "PlacementGroup",
    "VirtualizationType",
    "Hypervisor",
    "ClientToken",
    "SecurityGroupIds",
    "Tenancy",
    "EbsOptimized",
    "IamInstanceProfile",
)
# TAG<TAB>instance<TAB>i-…<TAB>key<TAB>value: the later ec2-api-tools' tag line, printed
# after the instance it belongs to.
TAG_COLUMNS = ("ResourceType", "ResourceId", "Key", "Value")


def launch_time(value: Any) -> str:
    """``2007-07-11T16:40:44+0000``, seed 002's form (UTC)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S+0000")
    return "" if value is None else str(value)


def instance_columns(i: Mapping[str, Any]) -> tuple[Any, ...]:
    placement = i.get("Placement") or {}
    monitoring = (i.get("Monitoring") or {}).get("State")
    return (
        i.get("InstanceId"),
        i.get("ImageId"),
        i.get("PublicDnsName"),
        i.get("PrivateDnsName"),
        (i.get("State") or {}).get("Name"),
        i.get("KeyName"),
        i.get("AmiLaunchIndex"),
        ",".join(p.get("ProductCodeId", "") for p in i.get("ProductCodes") or []),
        i.get("InstanceType"),
        launch_time(i.get("LaunchTime")),
        placement.get("AvailabilityZone"),
        i.get("KernelId"),
        i.get("RamdiskId"),
        i.get("Platform"),
        f"monitoring-{monitoring}" if monitoring else None,
        i.get("PublicIpAddress"),
        i.get("PrivateIpAddress"),
        i.get("VpcId"),
        i.get("SubnetId"),
        i.get("RootDeviceType"),
        i.get("InstanceLifecycle"),
        i.get("SpotInstanceRequestId"),
        None,  # license
        placement.get("GroupName"),
        i.get("VirtualizationType"),
        i.get("Hypervisor"),
        i.get("ClientToken"),
        ",".join(g.get("GroupId", "") for g in i.get("SecurityGroups") or []),
        placement.get("Tenancy"),
        i.get("EbsOptimized"),
        (i.get("IamInstanceProfile") or {}).get("Arn"),
    )


def print_tags(ctx: Context, kind: str, resource_id: str, tags: Iterable[Mapping[str, Any]]):
    for tag in sorted(tags or (), key=lambda t: t.get("Key", "")):
        ctx.out.record("TAG", kind, resource_id, tag.get("Key"), tag.get("Value"))


def print_instance(ctx: Context, i: Mapping[str, Any]) -> None:
    ctx.out.record("INSTANCE", *instance_columns(i))
    print_tags(ctx, "instance", i.get("InstanceId", ""), i.get("Tags") or [])


def group_names(reservation: Mapping[str, Any]) -> str:
    return ",".join(
        g.get("GroupName") or g.get("GroupId") or "" for g in reservation.get("Groups") or []
    )


# --- ec2-run-instances -------------------------------------------------------------------


def instance_count(text: str) -> tuple[int, int]:
    """``-n 7`` or ``-n 2-3`` (MIN-MAX): at least MIN, as many as fit up to MAX."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"give COUNT or MIN-MAX, not {text!r}")
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) else low
    if low < 1 or high < low:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the counts are at least 1, and MIN is at most MAX"
        )
    return low, high


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ami", metavar="AMI", help="the image to launch (ami-…)")
    p.add_argument(
        "-n",
        "--instance-count",
        type=instance_count,
        default=(1, 1),
        metavar="MIN[-MAX]",
        help="how many instances: COUNT, or MIN-MAX for as many as fit (default 1)",
    )
    p.add_argument(
        "-g",
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="security group, by name or sg- id (repeatable; default: the default group)",
    )
    p.add_argument("-k", "--key", metavar="KEYPAIR", help="key pair name")
    p.add_argument("-t", "--instance-type", metavar="TYPE", help="instance type (m1.small)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("-d", "--user-data", metavar="DATA", help="user data, as given")
    data.add_argument(
        "-f", "--user-data-file", metavar="FILE", help="user data from a file, as its bytes"
    )
    p.add_argument("-s", "--subnet", metavar="SUBNET", help="subnet id (default: a default one)")
    p.add_argument("--private-ip-address", metavar="IP", help="the primary private address")
    p.add_argument("-z", "--availability-zone", metavar="ZONE", help="availability zone")
    p.add_argument(
        "--client-token", metavar="TOKEN", help="idempotency token: a repeat launches nothing"
    )


def run_params(a: argparse.Namespace) -> dict[str, Any]:
    low, high = a.instance_count
    params: dict[str, Any] = {"ImageId": a.ami, "MinCount": low, "MaxCount": high}
    ids = [g for g in a.group if g.startswith("sg-")]
    names = [g for g in a.group if not g.startswith("sg-")]
    if ids:
        params["SecurityGroupIds"] = ids
    if names:
        params["SecurityGroups"] = names
    if a.key:
        params["KeyName"] = a.key
    if a.instance_type:
        params["InstanceType"] = a.instance_type
    if a.user_data is not None:
        params["UserData"] = a.user_data  # botocore base64-encodes it
    if a.user_data_file is not None:
        try:
            with open(a.user_data_file, "rb") as f:
                params["UserData"] = f.read()
        except OSError as e:
            raise Failure(
                f"cannot read the user data file {a.user_data_file}: {e.strerror}"
            ) from None
    if a.subnet:
        params["SubnetId"] = a.subnet
    if a.private_ip_address:
        params["PrivateIpAddress"] = a.private_ip_address
    if a.availability_zone:
        params["Placement"] = {"AvailabilityZone": a.availability_zone}
    if a.client_token:
        params["ClientToken"] = a.client_token
    return params


def _run(ctx: Context, a: argparse.Namespace) -> None:
    reply = ctx.call("RunInstances", **run_params(a))
    # Seed 002: `RESERVATION r-a034c7c9 924417782495 default` (id, owner, group names).
    ctx.out.record(
        "RESERVATION", reply.get("ReservationId"), reply.get("OwnerId"), group_names(reply)
    )
    for instance in reply.get("Instances") or []:
        print_instance(ctx, instance)


RUN_INSTANCES = Command(
    name="ec2-run-instances",
    aliases=("ec2run", "ec2-run-instance"),
    summary="Launch instances of an image.",
    arguments=_run_arguments,
    run=_run,
    layouts={
        "RESERVATION": ("ReservationId", "OwnerId", "Groups"),
        "INSTANCE": INSTANCE_COLUMNS,
    },
    epilog="examples:\n  ec2-run-instances ami-eca54085\n  ec2run ami-fba54092 -n 7 -g apache"
    "\n  ec2run ami-e3a5408a -n 2-5 -g appserver -k mykey -f boot.sh",
)


# --- ec2-describe-instances --------------------------------------------------------------


def _describe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", nargs="*", metavar="INSTANCE", help="instance ids (default: all)")
    add_filter_option(p)


def _describe(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    if a.instances:
        params["InstanceIds"] = a.instances
    if a.filters:
        params["Filters"] = api_filters(a.filters)
    for reservation in ctx.call_all("DescribeInstances", "Reservations", **params):
        # Seed 002's ec2din: `RESERVATION r-0592776c 598916040194`, no group column (each
        # instance's group ids are in its INSTANCE line).
        ctx.out.record("RESERVATION", reservation.get("ReservationId"), reservation.get("OwnerId"))
        for instance in reservation.get("Instances") or []:
            print_instance(ctx, instance)


DESCRIBE_INSTANCES = Command(
    name="ec2-describe-instances",
    aliases=("ec2din",),
    summary="Describe instances, by reservation.",
    arguments=_describe_arguments,
    run=_describe,
    layouts={
        "RESERVATION": ("ReservationId", "OwnerId"),
        "INSTANCE": INSTANCE_COLUMNS,
        "TAG": TAG_COLUMNS,
    },
    epilog="examples:\n  ec2din i-cfd732a6\n  ec2din -F instance-state-name=running",
)


# --- state changes -----------------------------------------------------------------------
#
# INSTANCE<TAB>i-…<TAB>previous state<TAB>current state: the ec2-api-tools' line for
# ec2-terminate-instances, ec2-stop-instances and ec2-start-instances.

CHANGE_LAYOUTS = {"INSTANCE": ("InstanceId", "PreviousState", "CurrentState")}


def _ids_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instances", nargs="+", metavar="INSTANCE", help="instance ids")


def _stop_arguments(p: argparse.ArgumentParser) -> None:
    _ids_arguments(p)
    p.add_argument("-f", "--force", action="store_true", help="stop without a clean shutdown")


def _print_changes(ctx: Context, changes: Iterable[Mapping[str, Any]]) -> None:
    for c in changes:
        ctx.out.record(
            "INSTANCE",
            c.get("InstanceId"),
            (c.get("PreviousState") or {}).get("Name"),
            (c.get("CurrentState") or {}).get("Name"),
        )


def _terminate(ctx: Context, a: argparse.Namespace) -> None:
    reply = ctx.call("TerminateInstances", InstanceIds=a.instances)
    _print_changes(ctx, reply.get("TerminatingInstances") or [])


def _stop(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {"InstanceIds": a.instances}
    if a.force:
        params["Force"] = True
    _print_changes(ctx, ctx.call("StopInstances", **params).get("StoppingInstances") or [])


def _start(ctx: Context, a: argparse.Namespace) -> None:
    reply = ctx.call("StartInstances", InstanceIds=a.instances)
    _print_changes(ctx, reply.get("StartingInstances") or [])


def _reboot(ctx: Context, a: argparse.Namespace) -> None:
    ctx.call("RebootInstances", InstanceIds=a.instances)
    # RebootInstances answers only true, and it refuses the whole request unless every
    # instance is running; so each one went from running to running (a reboot). The old
    # ec2-reboot-instances printed nothing; this prints the state-change line the other
    # state commands print, so a script sees which instances it rebooted.
    for instance_id in dict.fromkeys(a.instances):
        ctx.out.record("INSTANCE", instance_id, "running", "running")


TERMINATE_INSTANCES = Command(
    name="ec2-terminate-instances",
    aliases=("ec2kill",),
    summary="Terminate instances.",
    arguments=_ids_arguments,
    run=_terminate,
    layouts=CHANGE_LAYOUTS,
)

STOP_INSTANCES = Command(
    name="ec2-stop-instances",
    aliases=("ec2stop",),
    summary="Stop running instances (their Elastic IPs stay with them).",
    arguments=_stop_arguments,
    run=_stop,
    layouts=CHANGE_LAYOUTS,
)

START_INSTANCES = Command(
    name="ec2-start-instances",
    aliases=("ec2start",),
    summary="Start stopped instances.",
    arguments=_ids_arguments,
    run=_start,
    layouts=CHANGE_LAYOUTS,
)

REBOOT_INSTANCES = Command(
    name="ec2-reboot-instances",
    aliases=("ec2reboot",),
    summary="Reboot running instances.",
    arguments=_ids_arguments,
    run=_reboot,
    layouts=CHANGE_LAYOUTS,
)
