"""Instances: RunInstances and the lifecycle, DescribeInstances, attributes, status.

The lifecycle is one explicit state machine (:data:`TRANSITIONS`), EC2's::

    pending -> running -> stopping -> stopped -> pending -> ...
    running -> running                      (reboot)
    any but terminated -> shutting-down -> terminated

The seam between the control plane and hosts: an instance stays ``pending`` until a host
claims it (:func:`claim_pending` sets ``instances.host``) and reports it running
(:func:`report_state`); ``stopping`` and ``shutting-down`` likewise wait for the host's
report. An instance no host holds does not wait: it stops or terminates at once, and with
``Config.auto_run`` (the default while there are no hosts) a pending instance runs at once.
The actions' responses show the state each request entered (``pending``, ``stopping``,
``shutting-down``), as EC2's do; the next Describe shows where it settled.

Addresses: a private IP from the subnet for the instance's life; a pool public IP while it
is pending or running (if its subnet maps public IPs on launch), released on stop, a new
one on start; an Elastic IP instead of the pool address while one is associated.

Change log kinds written here: ``instance.created``, ``instance.state`` (with ``state``,
``previous``, ``host`` and the interface ids), ``instance.attribute``, ``instance.claimed``;
interfaces and addresses log their own changes (see ``interfaces.py``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, func, insert, select, update

from stockade.errors import ApiError
from stockade.service import (
    groups,
    images,
    instance_options,
    instance_types,
    interfaces,
    ipv6,
    keypairs,
    resources,
)
from stockade.service.common import (
    ZONE_LETTERS,
    Config,
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    new_id,
)
from stockade.service.describe import Describe
from stockade.service.vpcs import zone_id
from stockade.store import schema
from stockade.store.db import Store, utcnow

I = schema.instances.c  # noqa: E741
RS = schema.reservations.c
N = schema.network_interfaces.c
S = schema.subnets.c
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")

STATE_CODES = {
    "pending": 0,
    "running": 16,
    "shutting-down": 32,
    "terminated": 48,
    "stopping": 64,
    "stopped": 80,
}

# Which state may follow which: the only place the lifecycle is defined.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "shutting-down"}),
    "running": frozenset({"running", "stopping", "shutting-down"}),
    "stopping": frozenset({"stopped", "shutting-down"}),
    "stopped": frozenset({"pending", "shutting-down"}),
    "shutting-down": frozenset({"terminated"}),
    "terminated": frozenset(),
}

# States that count against Config.max_instances (a host holds, or will hold, the instance).
ACTIVE_STATES = ("pending", "running", "stopping", "shutting-down")

INSTANCE_TYPES = frozenset(instance_types.TABLE)  # every type EC2 has (data/instance_types.csv)
DEFAULT_INSTANCE_TYPE = "m1.small"
MAX_USER_DATA = 16 * 1024

USER_SHUTDOWN = "Client.UserInitiatedShutdown"
GUEST_SHUTDOWN = "Client.InstanceInitiatedShutdown"
REASON_MESSAGES = {
    USER_SHUTDOWN: "Client.UserInitiatedShutdown: User initiated shutdown",
    GUEST_SHUTDOWN: "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
}


class LifecycleError(ApiError):
    """A host asked for a transition the state machine does not allow."""

    def __init__(self, message: str) -> None:
        super().__init__("IncorrectInstanceState", message, 409)


# --- the state machine ----------------------------------------------------------------------


def _get(ctx: Ctx, instance_id: str) -> Row:
    return ctx.conn.execute(select(schema.instances).where(I.id == instance_id)).one()


def _interfaces(ctx: Ctx, instance_id: str) -> list[Row]:
    return list(
        ctx.conn.execute(
            select(schema.network_interfaces)
            .where(N.instance_id == instance_id)
            .order_by(N.device_index)
        )
    )


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S GMT")


def enter(ctx: Ctx, inst: Row, new: str, *, reason: str = USER_SHUTDOWN) -> Row:
    """Move ``inst`` to state ``new`` (which must follow its state) with the side effects."""
    old = inst.state
    if new not in TRANSITIONS[old]:
        raise LifecycleError(f"The instance '{inst.id}' cannot go from {old} to {new}.")
    values: dict[str, Any] = {"state": new}
    if new == "pending":
        values.update(state_reason=None, transition_reason="")
    elif new in ("stopping", "shutting-down"):
        values["transition_reason"] = f"User initiated ({_now_text()})"
        values["state_reason"] = reason
    elif new in ("stopped", "terminated"):
        values["host"] = None
        values["state_reason"] = inst.state_reason or reason
    ctx.conn.execute(update(schema.instances).where(I.id == inst.id).values(**values))
    enis = _interfaces(ctx, inst.id)
    if new == "pending":
        for eni in enis:
            interfaces.assign_pool_ip(ctx, eni)
    elif new == "stopped":
        for eni in enis:
            interfaces.release_pool_ip(ctx, eni)
    elif new == "terminated":
        for eni in enis:  # an attached interface that outlives its instance is detached
            if eni.delete_on_termination:
                interfaces.delete_interface(ctx, eni)
            else:
                interfaces.detach(ctx, eni)
    ctx.log(
        "instance.state",
        inst.id,
        state=new,
        previous=old,
        host=values.get("host", inst.host),
        interface_ids=[e.id for e in enis],
    )
    return _get(ctx, inst.id)


def settle(ctx: Ctx, inst: Row) -> Row:
    """Finish transitions no host has to carry out (and run pending ones with auto_run)."""
    while inst.host is None:
        if inst.state == "pending" and ctx.config.auto_run:
            inst = enter(ctx, inst, "running")
        elif inst.state == "stopping":
            inst = enter(ctx, inst, "stopped")
        elif inst.state == "shutting-down":
            inst = enter(ctx, inst, "terminated")
        else:
            break
    return inst


# --- the seam for hosts (not EC2 actions) -----------------------------------------------------


def _host_ctx(tx: Any, row: Row, config: Config | None) -> Ctx:
    return Ctx(tx.conn, row.account_id, row.region, config or Config(), tx)


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not 0 < len(host) <= 128 or not host.isprintable():
        raise ApiError("InvalidParameterValue", "A host name is 1 to 128 printable characters.")
    return host


def placement(ctx: Ctx, inst: Row) -> dict[str, Any]:
    """What a host needs to run ``inst``: its interfaces, addresses, groups and user data."""
    enis = interfaces.views(ctx, _interfaces(ctx, inst.id))
    subnets = {
        r.id: r
        for r in ctx.conn.execute(
            select(schema.subnets).where(S.id.in_([v.row.subnet_id for v in enis]))
        )
    }
    out_enis = []
    for v in enis:
        subnet = subnets.get(v.row.subnet_id)
        out_enis.append(
            {
                "network_interface_id": v.row.id,
                "device_index": v.row.device_index,
                "mac_address": v.row.mac_address,
                "private_ip": v.row.private_ip,
                "secondary_ips": interfaces.secondary_ips(v.row),
                "ipv6_addresses": interfaces.ipv6_of(v.row),
                "subnet_id": v.row.subnet_id,
                "subnet_cidr": subnet.cidr if subnet is not None else None,
                "subnet_ipv6_cidr": str(ipv6.ipv6_block(ctx, v.row.subnet_id) or "") or None,
                "vpc_id": v.row.vpc_id,
                "public_ip": v.public_ip,
                "group_ids": [g["group_id"] for g in v.groups],
                "source_dest_check": v.row.source_dest_check,
            }
        )
    return {
        "instance_id": inst.id,
        "account_id": inst.account_id,
        "region": inst.region,
        "state": inst.state,
        "host": inst.host,
        "image_id": inst.image_id,
        "instance_type": inst.instance_type,
        "availability_zone": inst.availability_zone,
        "private_dns_name": interfaces.private_dns(inst.region, enis[0].row.private_ip)
        if enis
        else None,
        "user_data": inst.user_data,
        "shutdown_behavior": inst.shutdown_behavior,
        "interfaces": out_enis,
        "key_name": inst.key_name,
        "public_key": _public_key(ctx, inst.key_name),
    }


def _public_key(ctx: Ctx, key_name: str | None) -> str | None:
    """The launch key pair's OpenSSH public key line, as the instance's sshd accepts it."""
    row = keypairs.by_name(ctx, key_name) if key_name else None
    return f"{row.public_key} {row.name}" if row is not None else None


def claim_pending(
    store: Store, host: str, limit: int = 10, config: Config | None = None
) -> list[dict[str, Any]]:
    """Place up to ``limit`` unclaimed pending instances (oldest first) on ``host``.

    The host brings them up and reports each one ``running`` with :func:`report_state`.
    Writers are serialised, so two hosts never claim the same instance.
    """
    _check_host(host)
    limit = max(0, min(int(limit), 1000))
    claimed = []
    with store.write() as tx:
        rows = tx.conn.execute(
            select(schema.instances)
            .where(I.state == "pending", I.host.is_(None))
            .order_by(I.launch_time, I.launch_index, I.id)
            .limit(limit)
        ).all()
        for row in rows:
            tx.conn.execute(update(schema.instances).where(I.id == row.id).values(host=host))
            ctx = _host_ctx(tx, row, config)
            ctx.log("instance.claimed", row.id, host=host, state=row.state)
            claimed.append(placement(ctx, _get(ctx, row.id)))
    return claimed


# What a host may report, from each state: reported state -> the path through the machine.
HOST_REPORTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("pending", "running"): ("running",),
    ("stopping", "stopped"): ("stopped",),
    ("running", "stopped"): ("stopping", "stopped"),  # the guest shut itself down
    ("shutting-down", "terminated"): ("terminated",),
    ("running", "terminated"): ("shutting-down", "terminated"),
}


def report_state(
    store: Store,
    instance_id: str,
    state: str,
    host: str | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """A host reports that ``instance_id`` reached ``state`` (running, stopped, terminated).

    Only the host holding the instance may report (when ``host`` is given); anything the
    state machine does not allow raises :class:`LifecycleError` and changes nothing.
    A guest that stops itself (running -> stopped) goes through ``stopping``; a guest
    whose shutdown behaviour is ``terminate`` reports ``terminated``.
    """
    if state not in STATE_CODES:
        raise ApiError("InvalidParameterValue", f"Unknown instance state '{state}'.")
    with store.write() as tx:
        row = tx.conn.execute(select(schema.instances).where(I.id == instance_id)).first()
        if row is None:
            raise ApiError(
                "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist"
            )
        if row.state == state:  # a repeated report (the host may retry): nothing to do
            return {"instance_id": row.id, "state": row.state, "previous": row.state}
        if host is not None and row.host != _check_host(host):
            raise LifecycleError(f"The instance '{instance_id}' is not placed on host '{host}'.")
        path = HOST_REPORTS.get((row.state, state))
        if path is None:
            raise LifecycleError(
                f"The instance '{instance_id}' is {row.state}; a host cannot report it {state}."
            )
        ctx = _host_ctx(tx, row, config)
        previous = row.state
        for step in path:
            row = enter(ctx, row, step, reason=GUEST_SHUTDOWN)
        return {"instance_id": row.id, "state": row.state, "previous": previous}


def host_instances(store: Store, host: str, config: Config | None = None) -> list[dict]:
    """Everything placed on ``host`` (for a restarted host to pick up where it was)."""
    _check_host(host)
    with store.read() as conn:
        rows = conn.execute(
            select(schema.instances).where(I.host == host).order_by(I.launch_time, I.id)
        ).all()
        return [placement(Ctx(conn, r.account_id, r.region, config or Config()), r) for r in rows]


# --- describing ----------------------------------------------------------------------------


def state_of(name: str) -> Result:
    return {"code": STATE_CODES[name], "name": name}


def instance_result(
    ctx: Ctx, row: Row, enis: list[interfaces.View], tags: list | None, token: str | None
) -> Result:
    primary = enis[0] if enis else None
    public = primary.public_ip if primary else None
    private = primary.row.private_ip if primary else None
    reason = row.state_reason
    return {
        "architecture": "x86_64",
        "block_device_mappings": [],
        "client_token": token or "",
        "ebs_optimized": False,
        "ena_support": True,
        "hypervisor": "xen",
        "network_interfaces": [interfaces.instance_interface_result(ctx, v) for v in enis],
        "root_device_name": "/dev/xvda",
        "root_device_type": "ebs",
        "security_groups": primary.groups if primary else [],
        "source_dest_check": primary.row.source_dest_check if primary else None,
        "state_reason": {"code": reason, "message": REASON_MESSAGES.get(reason, reason)}
        if reason and row.state in ("stopping", "stopped", "shutting-down", "terminated")
        else None,
        "tags": tags or None,
        "virtualization_type": "hvm",
        "cpu_options": {"core_count": 1, "threads_per_core": 1},
        "hibernation_options": {"configured": False},
        "metadata_options": {
            "state": "applied",
            "http_tokens": "optional",
            "http_put_response_hop_limit": 1,
            "http_endpoint": "enabled",
            "http_protocol_ipv6": "disabled",
            "instance_metadata_tags": "disabled",
        },
        "platform_details": "Linux/UNIX",
        "usage_operation": "RunInstances",
        "usage_operation_update_time": row.launch_time,
        "private_dns_name_options": {
            "hostname_type": "ip-name",
            "enable_resource_name_dns_a_record": False,
            "enable_resource_name_dns_aaaa_record": False,
        },
        "instance_id": row.id,
        "image_id": row.image_id,
        "state": state_of(row.state),
        "private_dns_name": interfaces.private_dns(ctx.region, private) if private else "",
        "public_dns_name": interfaces.public_dns(ctx, public) if public else "",
        "state_transition_reason": row.transition_reason or "",
        "key_name": row.key_name,
        "ami_launch_index": row.launch_index,
        "product_codes": [],
        "instance_type": row.instance_type,
        "launch_time": row.launch_time,
        "placement": {
            "availability_zone": row.availability_zone,
            "availability_zone_id": zone_id(ctx.region, row.availability_zone[-1]),
            "group_name": "",
            "tenancy": "default",
        },
        "monitoring": {"state": "disabled"},
        "subnet_id": row.subnet_id if primary else None,
        "vpc_id": row.vpc_id if primary else None,
        "private_ip_address": private,
        "public_ip_address": public,
    }


def _reservations(ctx: Ctx, ids: set[str]) -> dict[str, Row]:
    out: dict[str, Row] = {}
    id_list = list(ids)
    for start in range(0, len(id_list), 500):
        chunk = id_list[start : start + 500]
        for r in ctx.conn.execute(select(schema.reservations).where(RS.id.in_(chunk))):
            out[r.id] = r
    return out


def describe_rows(ctx: Ctx, rows: list[Row]) -> list[Result]:
    """Instance results, each with hidden ``_reservation`` and ``_sort`` keys."""
    ids = [r.id for r in rows]
    enis = interfaces.views_by_instance(ctx, ids)
    tags = resources.tags_for(ctx, ids)
    res = _reservations(ctx, {r.reservation_id for r in rows})
    stored = resources.attributes_of(ctx, ids)
    out = []
    for r in rows:
        reservation = res[r.reservation_id]
        item = instance_result(ctx, r, enis.get(r.id, []), tags.get(r.id), reservation.client_token)
        if r.id in stored:  # options set away from their defaults
            item["metadata_options"] = instance_options.metadata_options(stored[r.id])
            item["placement"]["tenancy"] = instance_options.tenancy(stored[r.id])
        item["_reservation"] = reservation
        item["_sort"] = f"{r.launch_time}|{r.reservation_id}|{r.launch_index:06d}|{r.id}"
        out.append(item)
    return out


def group_reservations(items: list[Result]) -> list[Result]:
    """Instance results (in order) -> EC2 Reservation results; hidden keys are removed."""
    out: dict[str, Result] = {}
    for item in items:
        reservation = item.pop("_reservation")
        item.pop("_sort", None)
        entry = out.get(reservation.id)
        if entry is None:
            entry = out[reservation.id] = {
                "reservation_id": reservation.id,
                "owner_id": reservation.account_id,
                "groups": list(reservation.groups or []),
                "instances": [],
            }
        entry["instances"].append(item)
    return list(out.values())


def _groups(i: Result, key: str) -> list:
    return [g[key] for g in i["security_groups"]]


def _eni_values(i: Result, key: str) -> list:
    return [e.get(key) for e in i["network_interfaces"]]


def _assoc_values(i: Result, key: str) -> list:
    return [(e.get("association") or {}).get(key) for e in i["network_interfaces"]]


INSTANCE_FILTERS: FilterSpec = {
    "instance-id": lambda i: [i["instance_id"]],
    "instance-state-name": lambda i: [i["state"]["name"]],
    "instance-state-code": lambda i: [i["state"]["code"]],
    "instance.group-id": lambda i: _groups(i, "group_id"),
    "instance.group-name": lambda i: _groups(i, "group_name"),
    "group-id": lambda i: _groups(i, "group_id"),
    "group-name": lambda i: _groups(i, "group_name"),
    "private-ip-address": lambda i: [i["private_ip_address"]],
    "ip-address": lambda i: [i["public_ip_address"]],
    "private-dns-name": lambda i: [i["private_dns_name"]],
    "dns-name": lambda i: [i["public_dns_name"]],
    "subnet-id": lambda i: [i["subnet_id"]],
    "vpc-id": lambda i: [i["vpc_id"]],
    "image-id": lambda i: [i["image_id"]],
    "instance-type": lambda i: [i["instance_type"]],
    "key-name": lambda i: [i["key_name"]],
    "reservation-id": lambda i: [i["_reservation"].id],
    "owner-id": lambda i: [i["_reservation"].account_id],
    "availability-zone": lambda i: [i["placement"]["availability_zone"]],
    "launch-index": lambda i: [i["ami_launch_index"]],
    "launch-time": lambda i: [i["launch_time"]],
    "client-token": lambda i: [i["client_token"]],
    "architecture": lambda i: [i["architecture"]],
    "hypervisor": lambda i: [i["hypervisor"]],
    "root-device-type": lambda i: [i["root_device_type"]],
    "root-device-name": lambda i: [i["root_device_name"]],
    "virtualization-type": lambda i: [i["virtualization_type"]],
    "tenancy": lambda i: [i["placement"]["tenancy"]],
    "monitoring-state": lambda i: [i["monitoring"]["state"]],
    "source-dest-check": lambda i: [i["source_dest_check"]],
    "state-reason-code": lambda i: [(i.get("state_reason") or {}).get("code")],
    "network-interface.network-interface-id": lambda i: _eni_values(i, "network_interface_id"),
    "network-interface.subnet-id": lambda i: _eni_values(i, "subnet_id"),
    "network-interface.vpc-id": lambda i: _eni_values(i, "vpc_id"),
    "network-interface.private-dns-name": lambda i: _eni_values(i, "private_dns_name"),
    "network-interface.mac-address": lambda i: _eni_values(i, "mac_address"),
    "network-interface.status": lambda i: _eni_values(i, "status"),
    "network-interface.source-dest-check": lambda i: _eni_values(i, "source_dest_check"),
    "network-interface.group-id": lambda i: [
        g["group_id"] for e in i["network_interfaces"] for g in e["groups"]
    ],
    "network-interface.group-name": lambda i: [
        g["group_name"] for e in i["network_interfaces"] for g in e["groups"]
    ],
    "network-interface.addresses.private-ip-address": lambda i: _eni_values(
        i, "private_ip_address"
    ),
    "network-interface.association.public-ip": lambda i: _assoc_values(i, "public_ip"),
    "network-interface.association.ip-owner-id": lambda i: _assoc_values(i, "ip_owner_id"),
    "association.public-ip": lambda i: _assoc_values(i, "public_ip"),
}

_SQL_FILTERS = (
    ("instance-id", I.id),
    ("instance-state-name", I.state),
    ("reservation-id", I.reservation_id),
    ("subnet-id", I.subnet_id),
    ("vpc-id", I.vpc_id),
    ("image-id", I.image_id),
    ("instance-type", I.instance_type),
)


INSTANCES = Describe(
    "reservations",
    INSTANCE_FILTERS,
    describe_rows,
    table=schema.instances,
    prefix="i",
    ids="instance_ids",
    ids_wire="instancesSet",
    pushed=dict(_SQL_FILTERS),
    sort="_sort",
    finish=group_reservations,
)


@action("DescribeInstances", write=False)
def describe_instances(ctx: Ctx, p: Params) -> Result:
    return INSTANCES.run(ctx, p)


# --- RunInstances ---------------------------------------------------------------------------


def _positive(p: Params, key: str, wire: str) -> int:
    value = p.get(key)
    if value is None:
        raise ApiError("MissingParameter", f"The request must contain the parameter {wire}")
    if value < 1:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter {wire} is invalid. Expected a positive integer.",
        )
    return value


def check_instance_type(value: object) -> str:
    if value not in INSTANCE_TYPES:
        raise ApiError("InvalidParameterValue", f"Invalid value '{value}' for InstanceType.")
    assert isinstance(value, str)
    return value


def check_user_data(value: object) -> str | None:
    """User data as sent (base64), checked: decodable and at most 16 KB decoded."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError("InvalidUserData.Malformed", "User data must be base64 encoded.")
    compact = "".join(value.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("InvalidUserData.Malformed", "User data must be base64 encoded.") from None
    if len(raw) > MAX_USER_DATA:
        raise ApiError("InvalidParameterValue", f"User data is limited to {MAX_USER_DATA} bytes.")
    return compact


def _zones(ctx: Ctx) -> list[str]:
    return [f"{ctx.region}{letter}" for letter in ZONE_LETTERS]


def _subnet(ctx: Ctx, subnet_id: object, zone: str | None) -> Row:
    if subnet_id:
        subnet = resources.get(ctx, subnet_id, "subnet")
        if zone is not None and zone != subnet.availability_zone:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({zone}) for parameter availabilityZone is invalid. Subnet "
                f"'{subnet.id}' is in the availability zone {subnet.availability_zone}",
            )
        return subnet
    vpc_id = groups.default_vpc_id(ctx)
    q = select(schema.subnets).where(S.vpc_id == vpc_id, S.default_for_az.is_(True))
    if zone is not None:
        q = q.where(S.availability_zone == zone)
    subnet = ctx.conn.execute(q.order_by(S.availability_zone).limit(1)).first()
    if subnet is None:
        where = f" in availability zone {zone}" if zone else ""
        raise ApiError(
            "MissingInput",
            f"No default subnet for the default VPC '{vpc_id}'{where}. Please specify a subnet.",
        )
    return subnet


def _launch_groups(ctx: Ctx, subnet: Row, names: list, ids: list) -> list[Row]:
    default_vpc = groups.default_vpc_id_or_none(ctx)
    rows: dict[str, Row] = {}
    for g in resources.get_many(ctx, ids, "sg"):
        rows[g.id] = g
    for name in dict.fromkeys(names):
        vpc = None if subnet.vpc_id == default_vpc else subnet.vpc_id
        g = groups.group_by_name(ctx, name, vpc_id=vpc)
        rows.setdefault(g.id, g)
    chosen = list(rows.values()) or [interfaces.default_group(ctx, subnet.vpc_id)]
    interfaces.check_vpc(chosen, subnet.vpc_id, subnet.id)
    interfaces.check_group_count(ctx, len(chosen))
    return chosen


def _network_spec(p: Params) -> list[Params]:
    """RunInstances' networking, from the flat parameters or the NetworkInterfaces entries
    (one per interface to create; the one at device index 0 is the primary)."""
    specs = p.get("network_interfaces") or []
    if not specs:
        return [
            {
                "device_index": 0,
                "subnet_id": p.get("subnet_id"),
                "group_ids": p.get("security_group_ids") or [],
                "group_names": p.get("security_groups") or [],
                "private_ip": p.get("private_ip_address"),
                "addresses": [],
                "secondary_count": None,
                "ipv6_addresses": p.get("ipv6_addresses") or [],
                "ipv6_count": p.get("ipv6_address_count"),
                "public": None,
                "description": "",
                "delete_on_termination": True,
            }
        ]
    for flat, wire in (
        ("subnet_id", "SubnetId"),
        ("security_group_ids", "SecurityGroupIds"),
        ("security_groups", "SecurityGroups"),
        ("private_ip_address", "PrivateIpAddress"),
        ("ipv6_addresses", "Ipv6Addresses"),
        ("ipv6_address_count", "Ipv6AddressCount"),
    ):
        if p.get(flat):
            raise ApiError(
                "InvalidParameterCombination",
                f"Network interfaces and an instance-level {wire} may not be specified on the "
                "same request",
            )
    out: list[Params] = []
    seen: set[int] = set()
    for position, spec in enumerate(specs):
        index = spec.get("device_index")
        if index is None:
            index = position
        if not isinstance(index, int) or not 0 <= index < interfaces.MAX_INTERFACES_PER_INSTANCE:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({index}) for parameter DeviceIndex is invalid.",
            )
        if index in seen:
            raise ApiError(
                "InvalidParameterValue",
                f"Each network interface requires a unique device index ({index}).",
            )
        seen.add(index)
        if spec.get("network_interface_id"):
            raise ApiError(
                "UnsupportedOperation",
                "Stockade creates the interfaces of RunInstances itself; attach an existing "
                "NetworkInterfaceId with AttachNetworkInterface after the launch.",
            )
        if index != 0 and spec.get("associate_public_ip_address"):
            raise ApiError(
                "InvalidParameterCombination",
                "The associatePublicIPAddress parameter cannot be specified when launching "
                "with multiple network interfaces.",
            )
        out.append(
            {
                "device_index": index,
                "subnet_id": spec.get("subnet_id"),
                "group_ids": spec.get("groups") or [],
                "group_names": [],
                "private_ip": spec.get("private_ip_address"),
                "addresses": spec.get("private_ip_addresses") or [],
                "secondary_count": spec.get("secondary_private_ip_address_count"),
                "ipv6_addresses": spec.get("ipv6_addresses") or [],
                "ipv6_count": spec.get("ipv6_address_count"),
                "public": spec.get("associate_public_ip_address"),
                "description": resources.description(spec.get("description")) or "",
                "delete_on_termination": spec.get("delete_on_termination") is not False,
            }
        )
    if 0 not in seen:
        raise ApiError(
            "InvalidParameterValue", "The network interface at device index 0 is required."
        )
    return sorted(out, key=lambda n: n["device_index"])


def _extra_interface(ctx: Ctx, primary: Row, spec: Params) -> tuple[Params, Row, list[Row]]:
    """A launch interface beyond the primary: its subnet (in the primary's zone) and groups."""
    if not spec["subnet_id"]:
        raise ApiError(
            "MissingParameter",
            f"The network interface at device index {spec['device_index']} needs a SubnetId.",
        )
    subnet = resources.get(ctx, spec["subnet_id"], "subnet")
    if subnet.availability_zone != primary.availability_zone:
        raise ApiError(
            "InvalidParameterCombination",
            "The network interfaces of an instance must be in one availability zone "
            f"({subnet.id} is in {subnet.availability_zone}, {primary.id} in "
            f"{primary.availability_zone}).",
        )
    if spec["group_ids"]:
        rows = interfaces.groups_by_ids(ctx, subnet.vpc_id, spec["group_ids"], subnet.id)
    else:
        rows = [interfaces.default_group(ctx, subnet.vpc_id)]
    return spec, subnet, rows


def _request_hash(p: Params) -> str:
    body = {k: v for k, v in p.items() if k not in ("client_token", "dry_run")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def active_count(ctx: Ctx) -> int:
    return ctx.conn.execute(
        select(func.count())
        .select_from(schema.instances)
        .where(
            I.account_id == ctx.account_id,
            I.region == ctx.region,
            I.state.in_(ACTIVE_STATES),
        )
    ).scalar_one()


def _limit_error(ctx: Ctx, wanted: int) -> ApiError:
    return ApiError(
        "InstanceLimitExceeded",
        f"You have requested more instances ({wanted}) than your current instance limit of "
        f"{ctx.config.max_instances} allows for the specified instance type. "
        "Ask the Stockade operator to raise STOCKADE_MAX_INSTANCES.",
    )


def _tag_specs(p: Params) -> dict[str, list]:
    out: dict[str, list] = {"instance": [], "network-interface": []}
    for spec in p.get("tag_specifications") or ():
        rtype = spec.get("resource_type")
        if rtype == "volume":
            continue  # no volumes in Stockade
        if rtype not in out:
            raise ApiError(
                "InvalidParameterValue",
                f"'{rtype}' is not a valid taggable resource type for this operation.",
            )
        out[rtype] += spec.get("tags") or []
    return out


def _reservation_result(ctx: Ctx, reservation_id: str) -> Result:
    rows = list(
        ctx.conn.execute(
            select(schema.instances)
            .where(I.reservation_id == reservation_id)
            .order_by(I.launch_index)
        )
    )
    (res,) = group_reservations(describe_rows(ctx, rows))
    return res


@action("RunInstances", write=True)
def run_instances(ctx: Ctx, p: Params) -> Result:
    token = p.get("client_token")
    if token is not None:
        # printable ASCII only: PostgreSQL cannot store NUL, XML cannot carry control
        # characters back (the token is echoed in every Describe)
        if not 0 < len(token) <= 64 or not _PRINTABLE_ASCII.fullmatch(token):
            raise ApiError(
                "InvalidParameterValue",
                "Value for parameter clientToken is invalid. It must be 1 to 64 ASCII characters.",
            )
        existing = ctx.conn.execute(
            select(schema.reservations).where(
                RS.account_id == ctx.account_id, RS.region == ctx.region, RS.client_token == token
            )
        ).first()
        if existing is not None:
            if existing.request_hash != _request_hash(p):
                raise ApiError(
                    "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with arguments used "
                    "in previous request(s).",
                )
            return _reservation_result(ctx, existing.id)
    if not p.get("image_id"):
        raise ApiError("MissingParameter", "The request must contain the parameter ImageId")
    image_id = images.check_image(p["image_id"])
    min_count = _positive(p, "min_count", "MinCount")
    max_count = _positive(p, "max_count", "MaxCount")
    if max_count < min_count:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({max_count}) for parameter maxCount is invalid. "
            f"Expected a value greater than or equal to minCount ({min_count}).",
        )
    instance_type = check_instance_type(p.get("instance_type") or DEFAULT_INSTANCE_TYPE)
    key_name = keypairs.require(ctx, p["key_name"]).name if p.get("key_name") else None
    user_data = check_user_data(p.get("user_data"))
    behaviour = p.get("instance_initiated_shutdown_behavior") or "stop"
    if behaviour not in ("stop", "terminate"):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({behaviour}) for parameter instanceInitiatedShutdownBehavior is invalid.",
        )
    for unsupported in ("launch_template",):
        if p.get(unsupported):
            raise ApiError(
                "UnsupportedOperation", f"Stockade does not support {unsupported} on launch."
            )
    zone = (p.get("placement") or {}).get("availability_zone")
    if zone is not None and zone not in _zones(ctx):
        raise ApiError("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
    nets = _network_spec(p)
    net = nets[0]
    subnet = _subnet(ctx, net["subnet_id"], zone)
    group_rows = _launch_groups(ctx, subnet, net["group_names"], net["group_ids"])
    extras = [_extra_interface(ctx, subnet, n) for n in nets[1:]]
    explicit = any(n["private_ip"] or n["addresses"] or n["ipv6_addresses"] for n in nets)
    if explicit and max_count > 1:
        raise ApiError(
            "InvalidParameterCombination",
            "Private or IPv6 addresses can only be given when launching one instance.",
        )
    tag_specs = _tag_specs(p)

    room = ctx.config.max_instances - active_count(ctx)
    if room < min_count:
        raise _limit_error(ctx, ctx.config.max_instances - room + min_count)
    count = min(max_count, room)
    if net["private_ip"] is not None:
        if max_count > 1:
            raise ApiError(
                "InvalidParameterCombination",
                "A private IP address can only be given when launching one instance.",
            )
        ips = [interfaces.check_private_ip(ctx, subnet, net["private_ip"])]
    else:
        ips = interfaces.free_private_ips(ctx, subnet, count)
        if len(ips) < min_count:
            raise ApiError(
                "InsufficientFreeAddressesInSubnet",
                f"There are not enough free addresses in subnet '{subnet.id}' to satisfy the "
                "requested number of instances.",
            )
    count = min(count, len(ips))
    wants_public = subnet.map_public_ip if net["public"] is None else bool(net["public"])

    reservation_id = new_id("r")
    now = utcnow()
    ctx.conn.execute(
        insert(schema.reservations).values(
            id=reservation_id,
            account_id=ctx.account_id,
            region=ctx.region,
            client_token=token,
            request_hash=_request_hash(p) if token is not None else None,
            groups=[{"group_id": g.id, "group_name": g.name} for g in group_rows],
            created_at=now,
        )
    )
    made: list[str] = []
    for index in range(count):
        instance_id = new_id("i")
        ctx.conn.execute(
            insert(schema.instances).values(
                id=instance_id,
                account_id=ctx.account_id,
                region=ctx.region,
                reservation_id=reservation_id,
                launch_index=index,
                image_id=image_id,
                instance_type=instance_type,
                key_name=key_name,
                subnet_id=subnet.id,
                vpc_id=subnet.vpc_id,
                availability_zone=subnet.availability_zone,
                state="pending",
                transition_reason="",
                launch_time=now,
                user_data=user_data,
                disable_api_termination=bool(p.get("disable_api_termination")),
                shutdown_behavior=behaviour,
                host=None,
            )
        )
        if net["addresses"] or net["secondary_count"] or extras:
            # addresses beyond one primary per instance: taken as each instance is made
            primary, secondary, v6 = interfaces.plan_addresses(
                ctx,
                subnet,
                primary=net["private_ip"],
                listed=net["addresses"],
                secondary_count=net["secondary_count"],
                ipv6_listed=net["ipv6_addresses"],
                ipv6_count=net["ipv6_count"],
            )
        else:
            primary, secondary = ips[index], []
            v6 = interfaces.plan_ipv6(ctx, subnet, net["ipv6_addresses"], net["ipv6_count"])
        eni = interfaces.create_interface(
            ctx,
            subnet,
            group_rows,
            primary,
            instance_id=instance_id,
            wants_public_ip=wants_public,
            description=net["description"],
            delete_on_termination=net["delete_on_termination"],
            secondary=secondary,
            ipv6=v6,
        )
        for spec, extra_subnet, extra_groups in extras:
            first, more, more_v6 = interfaces.plan_addresses(
                ctx,
                extra_subnet,
                primary=spec["private_ip"],
                listed=spec["addresses"],
                secondary_count=spec["secondary_count"],
                ipv6_listed=spec["ipv6_addresses"],
                ipv6_count=spec["ipv6_count"],
            )
            extra = interfaces.create_interface(
                ctx,
                extra_subnet,
                extra_groups,
                first,
                instance_id=instance_id,
                device_index=spec["device_index"],
                description=spec["description"],
                delete_on_termination=spec["delete_on_termination"],
                secondary=more,
                ipv6=more_v6,
            )
            if tag_specs["network-interface"]:
                resources.set_tags(
                    ctx, extra.id, "network-interface", tag_specs["network-interface"]
                )
        ctx.log(
            "instance.created",
            instance_id,
            reservation_id=reservation_id,
            subnet_id=subnet.id,
            interface_id=eni.id,
            private_ip=eni.private_ip,
            state="pending",
        )
        if tag_specs["instance"]:
            resources.set_tags(ctx, instance_id, "instance", tag_specs["instance"])
        if tag_specs["network-interface"]:
            resources.set_tags(ctx, eni.id, "network-interface", tag_specs["network-interface"])
        interfaces.assign_pool_ip(ctx, eni)
        made.append(instance_id)
    result = _reservation_result(ctx, reservation_id)  # as launched: pending
    for instance_id in made:
        settle(ctx, _get(ctx, instance_id))
    return result


# --- state changes ----------------------------------------------------------------------------


def _targets(ctx: Ctx, p: Params) -> list[Row]:
    ids = p.get("instance_ids") or []
    if not ids:
        raise ApiError("MissingParameter", "The request must contain the parameter InstanceId")
    return resources.get_many(ctx, ids, "i")


def _change(ctx: Ctx, rows: list[Row], step: Callable[[Row], str | None]) -> list[Result]:
    """Apply ``step`` (the state to enter, or None for no change) to each instance.

    The state change reports the state each instance entered, as EC2 does; it may settle
    further at once (see :func:`settle`).
    """
    out = []
    for row in rows:
        previous = row.state
        new = step(row)
        if new is not None:
            settle(ctx, enter(ctx, row, new))
        out.append(
            {
                "instance_id": row.id,
                "current_state": state_of(new or previous),
                "previous_state": state_of(previous),
            }
        )
    return out


def _incorrect(row: Row, verb: str, article: str = "The") -> ApiError:
    return ApiError(
        "IncorrectInstanceState",
        f"{article} instance '{row.id}' is not in a state from which it can be {verb}.",
    )


@action("StopInstances", write=True)
def stop_instances(ctx: Ctx, p: Params) -> Result:
    if p.get("hibernate"):
        raise ApiError("UnsupportedOperation", "Stockade instances cannot hibernate.")

    def step(row: Row) -> str | None:
        if row.state == "running":
            return "stopping"
        if row.state in ("stopping", "stopped"):
            return None
        raise _incorrect(row, "stopped", "This")

    return {"stopping_instances": _change(ctx, _targets(ctx, p), step)}


@action("StartInstances", write=True)
def start_instances(ctx: Ctx, p: Params) -> Result:
    rows = _targets(ctx, p)
    starting = [r for r in rows if r.state == "stopped"]
    if starting and active_count(ctx) + len(starting) > ctx.config.max_instances:
        raise _limit_error(ctx, active_count(ctx) + len(starting))

    def step(row: Row) -> str | None:
        if row.state == "stopped":
            return "pending"
        if row.state in ("pending", "running"):
            return None
        raise _incorrect(row, "started")

    return {"starting_instances": _change(ctx, rows, step)}


@action("RebootInstances", write=True)
def reboot_instances(ctx: Ctx, p: Params) -> Result:
    rows = _targets(ctx, p)
    for row in rows:
        if row.state != "running":
            raise _incorrect(row, "rebooted")
    for row in rows:
        enter(ctx, row, "running")  # running -> running: the host reboots it
    return {}


@action("TerminateInstances", write=True)
def terminate_instances(ctx: Ctx, p: Params) -> Result:
    rows = _targets(ctx, p)
    for row in rows:
        if row.disable_api_termination and row.state != "terminated":
            raise ApiError(
                "OperationNotPermitted",
                f"The instance '{row.id}' may not be terminated. Modify its "
                "'disableApiTermination' instance attribute and try again.",
            )

    def step(row: Row) -> str | None:
        if row.state in ("shutting-down", "terminated"):
            return None
        return "shutting-down"

    return {"terminating_instances": _change(ctx, rows, step)}


# --- status ---------------------------------------------------------------------------------


def _summary(running: bool) -> Result:
    if running:
        return {"status": "ok", "details": [{"name": "reachability", "status": "passed"}]}
    return {"status": "not-applicable", "details": []}


def _details(i: Result, key: str) -> list:
    return [d["status"] for d in i[key]["details"]]


STATUS_FILTERS: FilterSpec = {
    "availability-zone": lambda i: [i["availability_zone"]],
    "instance-state-name": lambda i: [i["instance_state"]["name"]],
    "instance-state-code": lambda i: [i["instance_state"]["code"]],
    "instance-status.status": lambda i: [i["instance_status"]["status"]],
    "instance-status.reachability": lambda i: _details(i, "instance_status"),
    "system-status.status": lambda i: [i["system_status"]["status"]],
    "system-status.reachability": lambda i: _details(i, "system_status"),
}


def _statuses(ctx: Ctx, rows: list[Row]) -> list[Result]:
    return [
        {
            "availability_zone": r.availability_zone,
            "availability_zone_id": zone_id(ctx.region, r.availability_zone[-1]),
            "events": [],
            "instance_id": r.id,
            "instance_state": state_of(r.state),
            "instance_status": _summary(r.state == "running"),
            "system_status": _summary(r.state == "running"),
        }
        for r in rows
    ]


def _status_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Row]:
    rows = INSTANCES.rows(ctx, {"instance_ids": p.get("instance_ids")}, [])
    everything = bool(p.get("include_all_instances"))
    return [r for r in rows if r.state != "terminated" and (r.state == "running" or everything)]


INSTANCE_STATUSES = Describe(
    "instance_statuses",
    STATUS_FILTERS,
    _statuses,
    ids="instance_ids",
    ids_wire="instancesSet",
    sort="instance_id",
    source=_status_rows,
)


@action("DescribeInstanceStatus", write=False)
def describe_instance_status(ctx: Ctx, p: Params) -> Result:
    return INSTANCE_STATUSES.run(ctx, p)


# --- attributes -----------------------------------------------------------------------------

ATTRIBUTES = (
    "instanceType",
    "kernel",
    "ramdisk",
    "userData",
    "disableApiTermination",
    "instanceInitiatedShutdownBehavior",
    "rootDeviceName",
    "blockDeviceMapping",
    "productCodes",
    "sourceDestCheck",
    "groupSet",
    "ebsOptimized",
    "sriovNetSupport",
    "enaSupport",
    "enclaveOptions",
    "disableApiStop",
)


def _primary(ctx: Ctx, row: Row) -> Row | None:
    enis = _interfaces(ctx, row.id)
    return enis[0] if enis else None


@action("DescribeInstanceAttribute", write=False)
def describe_instance_attribute(ctx: Ctx, p: Params) -> Result:
    row = resources.get(ctx, p.get("instance_id"), "i")
    name = p.get("attribute")
    if name not in ATTRIBUTES:
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({name}) for parameter attribute is invalid. Unknown attribute.",
        )
    eni = _primary(ctx, row)
    out: Result = {"instance_id": row.id}
    if name == "instanceType":
        out["instance_type"] = {"value": row.instance_type}
    elif name == "userData":
        out["user_data"] = {"value": row.user_data} if row.user_data else {}
    elif name == "groupSet":
        out["groups"] = interfaces.groups_of(ctx, [eni.id]).get(eni.id, []) if eni else []
    elif name == "disableApiTermination":
        out["disable_api_termination"] = {"value": row.disable_api_termination}
    elif name == "instanceInitiatedShutdownBehavior":
        out["instance_initiated_shutdown_behavior"] = {"value": row.shutdown_behavior}
    elif name == "sourceDestCheck":
        out["source_dest_check"] = {"value": eni.source_dest_check if eni else True}
    elif name == "rootDeviceName":
        out["root_device_name"] = {"value": "/dev/xvda"}
    elif name == "blockDeviceMapping":
        out["block_device_mappings"] = []
    elif name == "productCodes":
        out["product_codes"] = []
    elif name == "kernel":
        out["kernel_id"] = {}
    elif name == "ramdisk":
        out["ramdisk_id"] = {}
    elif name == "ebsOptimized":
        out["ebs_optimized"] = {"value": False}
    elif name == "sriovNetSupport":
        out["sriov_net_support"] = {}
    elif name == "enaSupport":
        out["ena_support"] = {"value": True}
    elif name == "enclaveOptions":
        out["enclave_options"] = {"enabled": False}
    else:  # disableApiStop
        out["disable_api_stop"] = {"value": False}
    return out


# request member -> attribute name (ModifyInstanceAttribute's structured form)
_MODIFY_MEMBERS = {
    "groups": "groupSet",
    "instance_type": "instanceType",
    "user_data": "userData",
    "source_dest_check": "sourceDestCheck",
    "disable_api_termination": "disableApiTermination",
    "instance_initiated_shutdown_behavior": "instanceInitiatedShutdownBehavior",
    "kernel": "kernel",
    "ramdisk": "ramdisk",
    "ebs_optimized": "ebsOptimized",
    "sriov_net_support": "sriovNetSupport",
    "ena_support": "enaSupport",
    "block_device_mappings": "blockDeviceMapping",
    "disable_api_stop": "disableApiStop",
    "enclave_options": "enclaveOptions",
}


def _bool_value(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ApiError("InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid.")


def _must_be_stopped(row: Row) -> None:
    if row.state != "stopped":
        raise ApiError(
            "IncorrectInstanceState", f"The instance '{row.id}' is not in the 'stopped' state."
        )


@action("ModifyInstanceAttribute", write=True)
def modify_instance_attribute(ctx: Ctx, p: Params) -> Result:
    row = resources.get(ctx, p.get("instance_id"), "i")
    given: list[tuple[str, Any]] = [
        (attr, p[key]) for key, attr in _MODIFY_MEMBERS.items() if p.get(key) is not None
    ]
    if p.get("attribute") is not None:
        if p["attribute"] not in ATTRIBUTES:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({p['attribute']}) for parameter attribute is invalid. Unknown attribute.",
            )
        if p.get("value") is None:
            raise ApiError("MissingParameter", "The request must contain the parameter value")
        given.append((p["attribute"], {"value": p["value"], "plain": True}))
    if not given:
        raise ApiError(
            "MissingParameter", "The request must contain an attribute to modify (e.g. Groups)."
        )
    if len(given) > 1:
        raise ApiError(
            "InvalidParameterCombination",
            "Fields for multiple attribute types specified: " + ", ".join(a for a, _ in given),
        )
    name, raw = given[0]
    value = raw.get("value") if isinstance(raw, dict) else raw
    if row.state in ("shutting-down", "terminated"):
        raise ApiError(
            "IncorrectInstanceState",
            f"The instance '{row.id}' is not in a state from which it can be modified.",
        )
    changes: dict[str, Any] = {}
    if name == "groupSet":
        if not isinstance(value, list):
            raise ApiError("InvalidParameterValue", "Use the Groups parameter to change groups.")
        eni = _primary(ctx, row)
        assert eni is not None  # every instance that is not terminated has one
        interfaces.set_groups(ctx, eni, interfaces.groups_for_request(ctx, eni, value))
        return {}
    if name == "instanceType":
        _must_be_stopped(row)
        changes["instance_type"] = check_instance_type(value)
    elif name == "userData":
        _must_be_stopped(row)
        if isinstance(raw, dict) and raw.get("plain"):
            changes["user_data"] = check_user_data(value)
        else:  # the structured form's blob, already decoded by the codec
            data = value or b""
            if len(data) > MAX_USER_DATA:
                raise ApiError(
                    "InvalidParameterValue", f"User data is limited to {MAX_USER_DATA} bytes."
                )
            changes["user_data"] = base64.b64encode(data).decode("ascii") if data else None
    elif name == "disableApiTermination":
        changes["disable_api_termination"] = _bool_value(value, name)
    elif name == "instanceInitiatedShutdownBehavior":
        if value not in ("stop", "terminate"):
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({value}) for parameter instanceInitiatedShutdownBehavior is invalid.",
            )
        changes["shutdown_behavior"] = value
    elif name == "sourceDestCheck":
        eni = _primary(ctx, row)
        assert eni is not None
        flag = _bool_value(value, name)
        ctx.conn.execute(
            update(schema.network_interfaces).where(N.id == eni.id).values(source_dest_check=flag)
        )
        ctx.log("interface.attribute", eni.id, source_dest_check=flag, instance_id=row.id)
        return {}
    else:
        raise ApiError(
            "UnsupportedOperation", f"Stockade does not support modifying the attribute {name}."
        )
    ctx.conn.execute(update(schema.instances).where(I.id == row.id).values(**changes))
    ctx.log("instance.attribute", row.id, attribute=name)
    return {}
