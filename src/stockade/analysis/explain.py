"""`stockade explain`: why a flow is allowed or denied, in words, from the semantic core.

The ends may be instance ids, private IPs, public/Elastic IPs or outside addresses.
Traffic to a public IP arrives NATed at the edge: an instance sending to another's public
IP is seen with its own public address, so only CIDR rules can admit it (as on EC2).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from stockade.dataplane.agent import state_from_snapshot
from stockade.model import protocol_number
from stockade.policy import Decision, Flow, evaluate


class ExplainError(ValueError):
    """An end that cannot be resolved (unknown instance id, bad address)."""


def _end(snapshot: dict[str, Any], value: str) -> tuple[str | None, str | None, str | None]:
    """(interface id, address as given, public IP of the interface) for one end."""
    ifaces = snapshot["interfaces"]
    if value.startswith("i-"):
        for i in ifaces:
            if i["instance_id"] == value:
                return i["id"], None, i.get("public_ipv4")
        raise ExplainError(f"instance {value} is not running on any host (see stockade status)")
    if value.startswith("eni-"):
        for i in ifaces:
            if i["id"] == value:
                return i["id"], None, i.get("public_ipv4")
        raise ExplainError(f"network interface {value} is not on any host")
    try:
        addr = str(ipaddress.ip_address(value))
    except ValueError:
        raise ExplainError(f"{value!r} is not an instance id or an IP address") from None
    for i in ifaces:
        if addr in i["private_ipv4"]:
            return i["id"], None, i.get("public_ipv4")
        if i.get("public_ipv4") == addr:
            return i["id"], addr, addr
    return None, addr, None


def explain(
    snapshot: dict[str, Any],
    src: str,
    dst: str,
    *,
    protocol: str = "tcp",
    port: int = -1,
    icmp_type: int = -1,
    icmp_code: int = -1,
) -> Decision:
    state = state_from_snapshot(snapshot)
    src_iface, src_addr, src_public = _end(snapshot, src)
    dst_iface, dst_addr, _dst_public = _end(snapshot, dst)
    seen_from: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if dst_addr is not None and dst_iface is not None and src_iface is not None:
        if src_public is None:
            raise ExplainError(f"{src} has no public IP, so it cannot reach {dst}'s public address")
        seen_from = ipaddress.ip_address(src_public)  # hairpin NAT at the edge
    flow = Flow(
        src_iface or ipaddress.ip_address(src_addr),  # type: ignore[arg-type]
        dst_iface or ipaddress.ip_address(dst_addr),  # type: ignore[arg-type]
        protocol_number(protocol),
        port=port,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        src_addr=seen_from,
        dst_addr=ipaddress.ip_address(dst_addr) if dst_addr else None,
    )
    return evaluate(state, flow)


def as_json(decision: Decision) -> dict[str, Any]:
    def side(v: Any) -> dict[str, Any]:
        return {
            "checked": v.checked,
            "allowed": v.allowed,
            "reason": v.reason,
            "rules": [
                {
                    "rule_id": r.rule_id,
                    "group_id": r.group_id,
                    "rule": r.describe(),
                }
                for r in v.rules
            ],
        }

    return {
        "allowed": decision.allowed,
        "verdict": "allowed" if decision.allowed else "denied",
        "why": decision.why,
        "flow": decision.flow.what(),
        "from": str(decision.src),
        "to": str(decision.dst),
        "egress": side(decision.egress),
        "ingress": side(decision.ingress),
    }
