"""`stockade explain`: why a flow is allowed or denied, in words, from the semantic core.

Pure: a :class:`~stockade.analysis.paths.Network` (built from the caller's records by the
service layer) in, an :class:`~stockade.analysis.paths.Answer` out. The ends may be
instance ids, interface ids, private/public/Elastic IPs, EC2 DNS names or outside
addresses; traffic to a public IP arrives NATed at the edge, seen with the sender's public
address, so only CIDR rules can admit it (as on EC2).
"""

from __future__ import annotations

from typing import Any

from stockade.analysis.paths import Answer, Network, PathError, check, resolve_end
from stockade.model import protocol_number

ExplainError = PathError


def explain(
    net: Network,
    src: str,
    dst: str,
    *,
    protocol: str = "tcp",
    port: int = -1,
    icmp_type: int = -1,
    icmp_code: int = -1,
) -> Answer:
    number = protocol_number(protocol)
    return check(
        net,
        resolve_end(net, src),
        resolve_end(net, dst),
        number,
        port=port,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
    )


def _side(v: Any) -> dict[str, Any]:
    return {
        "checked": v.checked,
        "allowed": v.allowed,
        "reason": v.reason,
        "rules": [
            {"rule_id": r.rule_id, "group_id": r.group_id, "rule": r.describe()} for r in v.rules
        ],
    }


def as_json(answer: Answer) -> dict[str, Any]:
    decision = answer.decision
    out: dict[str, Any] = {
        "allowed": answer.allowed,
        "verdict": "allowed" if answer.allowed else "denied",
        "why": answer.why,
        "flow": answer.flow.what(),
        "from": answer.src.label(),
        "to": answer.dst.label(),
        "gateway": answer.gateway,
    }
    if decision is not None:
        out["egress"] = _side(decision.egress)
        out["ingress"] = _side(decision.ingress)
    else:
        out["blocked"] = {"code": answer.code, "reason": answer.blocked}
    return out
