"""`stockade audit`: what the groups expose, each finding with its severity, the rule that
causes it, how to fix it, the CIS AWS Foundations control and the Prowler check it matches.

CIS AWS Foundations Benchmark v1.5.0, v2.0.0 and v3.0.0 number the security-group controls
alike: 5.2 (no ingress from 0.0.0.0/0 to remote administration ports), 5.3 (the same from
::/0), 5.4 (the default group of every VPC restricts all traffic); 5.1 is about network
ACLs, which Stockade does not have. Prowler maps its checks to them the same way
(compliance/aws/cis_{1.5,2.0,3.0}_aws.json): `..._to_all_ports`, `..._tcp_port_22` and
`..._tcp_port_3389` to 5.2 and 5.3, `ec2_securitygroup_default_restrict_traffic` to 5.4.
Every Prowler `ec2_securitygroup_*` check that looks at rules and usage has a
counterpart here, flagged whether or not the group is in use (Prowler skips unused ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stockade.analysis.inventory import Inventory
from stockade.analysis.ports import of_rule
from stockade.model import ALL, TCP, UDP, Group, Rule

SEVERITIES = ("critical", "high", "medium", "low", "info")
RANK = {s: n for n, s in enumerate(SEVERITIES)}
PROWLER = "ec2_securitygroup_"
INTERNET = "ec2_securitygroup_allow_ingress_from_internet_to_"

# (ports, service, Prowler check): Prowler's per-port checks and its high-risk list
SERVICES: tuple[tuple[tuple[int, ...], str, str], ...] = (
    ((22,), "SSH", "tcp_port_22"),
    ((3389,), "RDP", "tcp_port_3389"),
    ((20, 21), "FTP", "tcp_port_ftp_20_21"),
    ((23,), "Telnet", "tcp_port_telnet_23"),
    ((3306,), "MySQL", "tcp_port_mysql_3306"),
    ((5432,), "PostgreSQL", "tcp_port_postgres_5432"),
    ((1433, 1434), "SQL Server", "tcp_port_sql_server_1433_1434"),
    ((1521, 2483), "Oracle", "tcp_port_oracle_1521_2483"),
    ((6379,), "Redis", "tcp_port_redis_6379"),
    ((27017, 27018), "MongoDB", "tcp_port_mongodb_27017_27018"),
    ((9200, 9300, 5601), "Elasticsearch/Kibana", "tcp_port_elasticsearch_kibana_9200_9300_5601"),
    ((11211,), "Memcached", "tcp_port_memcached_11211"),
    ((9092,), "Kafka", "tcp_port_kafka_9092"),
    ((7199, 9160, 8888), "Cassandra", "tcp_port_cassandra_7199_9160_8888"),
    (
        (25, 110, 135, 143, 445, 3000, 4333, 5000, 5500, 8080, 8088),
        "high-risk service",
        "high_risk_tcp_ports",
    ),
)
ADMIN_PORTS = (22, 3389)  # CIS 5.2/5.3's remote server administration ports
MANY_RULES = 50  # Prowler's max_security_group_rules


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: str
    help: str


CHECKS = {
    c.id: c
    for c in (
        Check(
            "all-traffic-from-anywhere",
            "All traffic (or every port) allowed in from anywhere",
            "critical",
            "Replace the rule with rules for the ports the instances serve, from the "
            "addresses or groups that need them.",
        ),
        Check(
            "admin-port-open",
            "An administration or database port open to the whole internet",
            "high",
            "Allow the port from your own address (a /32), a VPN range or a bastion's group "
            "instead of 0.0.0.0/0 or ::/0.",
        ),
        Check(
            "default-group-open",
            "The default group allows more than its own members",
            "high",
            "Revoke the default group's extra rules and put them in a group of their own; "
            "launch instances into named groups.",
        ),
        Check(
            "default-group-in-use",
            "Instances use the default group, which has rules",
            "low",
            "Move the instances to named groups and revoke the default group's rules "
            "(CIS 5.4 wants it to allow nothing).",
        ),
        Check(
            "wide-public-range",
            "A broad public address range (shorter than /24) is allowed",
            "medium",
            "Narrow the range to the addresses that need access.",
        ),
        Check(
            "redundant-rule",
            "A rule another rule of the same group already covers",
            "low",
            "Revoke the narrower rule: the wider one already allows its traffic.",
        ),
        Check(
            "stale-group-reference",
            "A rule names a group that no longer exists",
            "medium",
            "Revoke the rule, or point it at the group that replaced the deleted one.",
        ),
        Check(
            "unused-group",
            "A group no interface uses and no rule references",
            "low",
            "Delete the group if nothing will use it (stockade/aws ec2 delete-security-group).",
        ),
        Check(
            "many-rules",
            f"A group with more than {MANY_RULES} rules",
            "low",
            "Split the group or merge adjacent port ranges; big groups are hard to review.",
        ),
        Check(
            "launch-wizard-group",
            "A group made by the console's launch wizard",
            "medium",
            "Replace it with a group named for its purpose and with only the rules it needs.",
        ),
        Check(
            "port-open-to-internet",
            "A port open to the whole internet",
            "info",
            "Fine for a public service (a web server's 80/443); otherwise allow only the "
            "addresses or groups that need it.",
        ),
        Check(
            "port-open-to-public-address",
            "A port open to a specific public address range",
            "info",
            "Check that the range is still yours (an office, a VPN) and as narrow as it can be.",
        ),
        Check(
            "egress-wide-open",
            "All outbound traffic allowed to anywhere",
            "info",
            "If the instances need only some destinations, replace the rule with rules for "
            "those; an attacker on them can otherwise reach anything.",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    group_id: str
    group_name: str
    message: str
    rule: Rule | None = None
    cis: tuple[str, ...] = ()
    prowler: tuple[str, ...] = ()

    @property
    def fix(self) -> str:
        return CHECKS[self.check].help

    @property
    def title(self) -> str:
        return CHECKS[self.check].title

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "group_id": self.group_id,
            "group_name": self.group_name,
            "rule_id": self.rule.rule_id if self.rule else None,
            "rule": self.rule.describe() if self.rule else None,
            "message": self.message,
            "fix": self.fix,
            "cis": list(self.cis),
            "prowler": list(self.prowler),
        }


def _anywhere(rule: Rule) -> bool:
    return rule.cidr is not None and rule.cidr.prefixlen == 0


def _cis(rule: Rule, *controls: str) -> tuple[str, ...]:
    """The CIS control of an open-to-anywhere rule: 5.2 for IPv4, 5.3 for IPv6."""
    assert rule.cidr is not None
    return controls or (("5.2",) if rule.cidr.version == 4 else ("5.3",))


def _all_ports(rule: Rule) -> bool:
    return rule.proto == ALL or (rule.proto in (TCP, UDP) and rule.ports.is_all)  # type: ignore[union-attr]


def _covers(wide: Rule, narrow: Rule) -> bool:
    """Whether ``wide`` admits everything ``narrow`` does (same group and direction)."""
    if wide is narrow or wide.egress != narrow.egress:
        return False
    w, n = of_rule(wide), of_rule(narrow)
    if (w & n) != n:
        return False
    if narrow.ref_group_id is not None:
        return wide.ref_group_id == narrow.ref_group_id
    if wide.cidr is None or narrow.cidr is None or wide.cidr.version != narrow.cidr.version:
        return False
    return narrow.cidr.subnet_of(wide.cidr)  # type: ignore[arg-type]


def _label(g: Group) -> str:
    return f"{g.name} ({g.id})" if g.name else g.id


def audit(inv: Inventory) -> list[Finding]:
    """Every finding, most severe first."""
    state = inv.state
    used = {gid for i in state.interfaces.values() for gid in i.group_ids}
    used |= {gid for i in inv.idle_interfaces for gid in i.group_ids}
    referenced = {
        r.ref_group_id
        for g in state.groups.values()
        for r in g.rules
        if r.ref_group_id and r.ref_group_id != g.id
    }
    out: list[Finding] = []
    for g in state.groups.values():
        name = _label(g)

        def add(
            check: str, message: str, rule: Rule | None = None, g: Group = g, **kw: Any
        ) -> None:
            severity = kw.pop("severity", CHECKS[check].severity)
            out.append(Finding(check, severity, g.id, g.name, message, rule, **kw))

        for rule in g.ingress:
            if _anywhere(rule):
                if _all_ports(rule):
                    add(
                        "all-traffic-from-anywhere",
                        f"{name} allows {rule.describe()}: every port of its instances is "
                        "open to the internet",
                        rule,
                        cis=_cis(rule),
                        prowler=(INTERNET + "all_ports", INTERNET + "any_port"),
                    )
                    continue
                opened = False
                if rule.proto == TCP:
                    for ports, service, check in SERVICES:
                        hit = [p for p in ports if p in rule.ports]  # type: ignore[operator]
                        if hit:
                            admin = any(p in ADMIN_PORTS for p in hit)
                            add(
                                "admin-port-open",
                                f"{name} opens {service} (tcp {', '.join(map(str, hit))}) to "
                                f"{rule.cidr}: {rule.describe()}",
                                rule,
                                cis=_cis(rule) if admin else (),
                                prowler=(INTERNET + check,),
                            )
                            opened = True
                if not opened and g.id in used:
                    add(
                        "port-open-to-internet",
                        f"{name} allows {rule.describe()} (in use by instances)",
                        rule,
                        prowler=(INTERNET + "any_port",),
                    )
            elif rule.cidr is not None and rule.cidr.is_global and g.id in used:
                add(
                    "port-open-to-public-address",
                    f"{name} allows {rule.describe()}",
                    rule,
                    prowler=(INTERNET + "any_port_from_ip",),
                )
            c = rule.cidr
            if c is not None and c.version == 4 and 0 < c.prefixlen < 24 and c.is_global:
                add(
                    "wide-public-range",
                    f"{name} allows {rule.describe()}: {c.num_addresses:,} public addresses",
                    rule,
                    prowler=(PROWLER + "allow_wide_open_public_ipv4",),
                )
        for rule in g.egress:
            if _anywhere(rule) and rule.proto == ALL and g.id in used:
                add(
                    "egress-wide-open",
                    f"{name} allows {rule.describe()}",
                    rule,
                )
        # the default group: ingress from anything but itself is more than EC2's default
        if g.name == "default":
            extra = [r for r in g.ingress if r.ref_group_id != g.id]
            for rule in extra:
                add(
                    "default-group-open",
                    f"the default group {g.id} allows {rule.describe()} (EC2's default "
                    "admits only its own members)",
                    rule,
                    cis=("5.4",),
                    prowler=(PROWLER + "default_restrict_traffic",),
                )
            if g.rules and g.id in used:
                add(
                    "default-group-in-use",
                    f"instances use the default group {g.id}, which has {len(g.rules)} rules",
                    cis=("5.4",),
                    prowler=(PROWLER + "default_restrict_traffic",),
                )
        # rules another rule of the same group covers (the later of two equal ones)
        for n, rule in enumerate(g.rules):
            for m, other in enumerate(g.rules):
                if m != n and _covers(other, rule) and (not _covers(rule, other) or m < n):
                    add(
                        "redundant-rule",
                        f"{name}: {rule.describe()} is covered by {other.describe()}"
                        + (f" ({other.rule_id})" if other.rule_id else ""),
                        rule,
                    )
                    break
        for rule in g.rules:
            ref = rule.ref_group_id
            if ref and ref not in state.groups and ref not in inv.foreign_groups:
                add(
                    "stale-group-reference",
                    f"{name}: {rule.describe()} names {ref}, which does not exist",
                    rule,
                )
        if g.name != "default" and g.id not in used and g.id not in referenced:
            add(
                "unused-group",
                f"{name} is used by no network interface and referenced by no rule",
                prowler=(PROWLER + "not_used",),
            )
        if len(g.rules) > MANY_RULES:
            add(
                "many-rules",
                f"{name} has {len(g.rules)} rules",
                prowler=(PROWLER + "with_many_ingress_egress_rules",),
            )
        if g.name.startswith("launch-wizard"):
            add(
                "launch-wizard-group",
                f"{name} was made by the launch wizard",
                prowler=(PROWLER + "from_launch_wizard",),
            )
    out.sort(key=lambda f: (RANK[f.severity], f.check, f.group_id, f.message))
    return out


def failing(findings: list[Finding], threshold: str | None) -> list[Finding]:
    """The findings at ``threshold`` or worse (none when there is no threshold)."""
    if not threshold:
        return []
    return [f for f in findings if RANK[f.severity] <= RANK[threshold]]


SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}


def sarif(findings: list[Finding], version: str = "0") -> dict[str, Any]:
    """SARIF 2.1.0: one run, a rule per check, a result per finding located logically at
    the group (and the rule, when one causes it)."""
    rules = []
    index = {}
    for n, check in enumerate(CHECKS.values()):
        index[check.id] = n
        rules.append(
            {
                "id": check.id,
                "name": check.id.replace("-", " ").title().replace(" ", ""),
                "shortDescription": {"text": check.title},
                "fullDescription": {"text": check.title},
                "help": {"text": check.help},
                "defaultConfiguration": {"level": SARIF_LEVEL.get(check.severity, "note")},
                "properties": {
                    "security-severity": SECURITY_SEVERITY[check.severity],
                    "tags": ["security", "security-group"],
                },
            }
        )
    results = []
    for f in findings:
        where = [{"name": f.group_id, "fullyQualifiedName": f.group_id, "kind": "resource"}]
        if f.rule is not None:
            rid = f.rule.rule_id or f.rule.describe()
            where.append(
                {"name": rid, "fullyQualifiedName": f"{f.group_id}/{rid}", "kind": "member"}
            )
        results.append(
            {
                "ruleId": f.check,
                "ruleIndex": index[f.check],
                "level": SARIF_LEVEL.get(f.severity, "note"),
                "message": {"text": f"{f.message}. Fix: {f.fix}"},
                "locations": [{"logicalLocations": where}],
                "properties": {
                    "severity": f.severity,
                    "cis": list(f.cis),
                    "prowler": list(f.prowler),
                },
            }
        )
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "stockade audit",
                        "version": version,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
