"""`analysis.audit` on model values: the checks EC2 itself would not let us seed through
the API (a rule naming a deleted group), port ranges, IPv6 and the CIS mapping."""

from __future__ import annotations

from stockade.analysis.audit import audit, failing
from stockade.analysis.inventory import Inventory
from stockade.model import Group, Interface, Rule, State


def _inv(*groups: Group, used: tuple[str, ...] = (), foreign: frozenset[str] = frozenset()):
    iface = Interface("eni-1", "i-1", "", "", ("172.31.0.4",), (), used)
    return Inventory(State.of(groups, [iface] if used else []), foreign_groups=foreign)


def test_a_rule_naming_a_deleted_group_is_stale_but_another_accounts_is_not():
    g = Group(
        "sg-1",
        (
            Rule("sg-1", False, "tcp", 22, 22, ref_group_id="sg-gone", rule_id="sgr-1"),
            Rule("sg-1", False, "tcp", 80, 80, ref_group_id="sg-theirs", rule_id="sgr-2"),
        ),
        "app",
    )
    findings = audit(_inv(g, used=("sg-1",), foreign=frozenset({"sg-theirs"})))
    (stale,) = [f for f in findings if f.check == "stale-group-reference"]
    assert stale.rule.rule_id == "sgr-1" and "sg-gone" in stale.message


def test_a_port_range_from_anywhere_names_each_service_it_opens():
    g = Group("sg-1", (Rule("sg-1", False, "tcp", 0, 1024, cidr="0.0.0.0/0"),), "low-ports")
    findings = audit(_inv(g, used=("sg-1",)))
    services = sorted(f.prowler[0].split("internet_to_")[1] for f in findings if f.prowler)
    assert services == [
        "high_risk_tcp_ports",
        "tcp_port_22",
        "tcp_port_ftp_20_21",
        "tcp_port_telnet_23",
    ]
    (ssh,) = [f for f in findings if f.prowler and f.prowler[0].endswith("_22")]
    assert ssh.cis == ("5.2",) and ssh.severity == "high"


def test_ipv6_anywhere_maps_to_cis_5_3_and_every_port_counts_as_all_traffic():
    g = Group(
        "sg-1",
        (
            Rule("sg-1", False, "tcp", 3389, 3389, cidr="::/0"),
            Rule("sg-1", False, "udp", 0, 65535, cidr="0.0.0.0/0"),
        ),
    )
    findings = audit(_inv(g))
    rdp = [f for f in findings if f.check == "admin-port-open"]
    assert [f.cis for f in rdp] == [("5.3",)]
    (everything,) = [f for f in findings if f.check == "all-traffic-from-anywhere"]
    assert everything.severity == "critical" and everything.cis == ("5.2",)
    assert failing(findings, "critical") == [everything]
    assert failing(findings, None) == []


def test_the_default_groups_own_rules_are_not_findings_until_instances_use_it():
    own = Group(
        "sg-d",
        (
            Rule("sg-d", False, "-1", ref_group_id="sg-d"),
            Rule("sg-d", True, "-1", cidr="0.0.0.0/0"),
        ),
        "default",
    )
    assert audit(_inv(own)) == []
    used = {f.check for f in audit(_inv(own, used=("sg-d",)))}
    assert used == {"default-group-in-use", "egress-wide-open"}
