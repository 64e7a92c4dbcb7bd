"""`stockade reach`, `audit` and `blast` against a bare `stockade serve` (no sandbox), with
the seeds' layouts built through boto3 in accounts of their own: Albert (002), Mary's
three tiers (002) and the bastion/app/db layout of 004, plus one layout with every
misconfiguration the audit knows."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.analysis import fromapi
from stockade.analysis import reach as reaching
from stockade.analysis.audit import audit
from stockade.analysis.blast import blast

from conftest import BIN, Server, start_server, stop_server

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = start_server()
    yield server
    stop_server(server)


def _image(ec2) -> str:
    return ec2.describe_images()["Images"][0]["ImageId"]


def _run(ec2, group_ids: list[str], count: int = 1, name: str = "") -> list[str]:
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}] if name else []
    r = ec2.run_instances(
        ImageId=_image(ec2),
        MinCount=count,
        MaxCount=count,
        SecurityGroupIds=group_ids,
        TagSpecifications=tags,
    )
    return [i["InstanceId"] for i in r["Instances"]]


def _tcp(port: int, cidr: str | None = None, group: str | None = None, to: int | None = None):
    perm: dict = {"IpProtocol": "tcp", "FromPort": port, "ToPort": to or port}
    if cidr and ":" in cidr:
        perm["Ipv6Ranges"] = [{"CidrIpv6": cidr}]
    elif cidr:
        perm["IpRanges"] = [{"CidrIp": cidr}]
    else:
        perm["UserIdGroupPairs"] = [{"GroupId": group}]
    return perm


class Layout:
    def __init__(self, server: Server) -> None:
        self.account = server.account()
        self.ec2 = server.client(self.account)
        self.env = server.env(self.account)
        self.ids: dict[str, str] = {}
        self.instances: dict[str, list[str]] = {}

    def group(self, name: str, *perms: dict) -> str:
        gid = self.ec2.create_security_group(GroupName=name, Description=name)["GroupId"]
        self.ids[name] = gid
        if perms:
            self.ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=list(perms))
        return gid

    def inventory(self):
        return fromapi.fetch(self.ec2)

    def cli(self, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BIN / "stockade"), *args], env=self.env, capture_output=True, timeout=60
        )
        if check is not None:
            assert proc.returncode == check, proc.stderr.decode()
        return proc


@pytest.fixture(scope="module")
def albert(srv: Server) -> Layout:
    lay = Layout(srv)
    default = lay.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
    lay.ids["default"] = default["GroupId"]
    lay.ec2.authorize_security_group_ingress(
        GroupName="default", IpPermissions=[_tcp(22, "192.168.1.130/32")]
    )
    lay.instances["albert"] = _run(lay.ec2, [default["GroupId"]], name="albert")
    return lay


@pytest.fixture(scope="module")
def mary(srv: Server) -> Layout:
    lay = Layout(srv)
    apache = lay.group("apache", _tcp(80, "0.0.0.0/0"))
    app = lay.group("appserver", {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": apache}]})
    lay.instances["apache"] = _run(lay.ec2, [apache], 7)
    lay.instances["appserver"] = _run(lay.ec2, [app], 2)
    return lay


@pytest.fixture(scope="module")
def bastion(srv: Server) -> Layout:
    lay = Layout(srv)
    gw = lay.group("gw", _tcp(62222, "203.0.113.7/32"))
    elb = lay.group("elb", _tcp(80, "0.0.0.0/0"), _tcp(443, "0.0.0.0/0"))
    app = lay.group("app", _tcp(80, group=elb), _tcp(443, group=elb), _tcp(22, group=gw))
    db = lay.group("db", _tcp(3306, group=app))
    for name, gid, n in (("gw", gw, 1), ("elb", elb, 1), ("app", app, 2), ("db", db, 1)):
        lay.instances[name] = _run(lay.ec2, [gid], n, name=name)
    return lay


@pytest.fixture(scope="module")
def careless(srv: Server) -> Layout:
    """Every misconfiguration the audit knows (but a stale reference, which EC2 refuses)."""
    lay = Layout(srv)
    lay.ids["default"] = lay.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][
        0
    ]["GroupId"]
    lay.ec2.authorize_security_group_ingress(
        GroupName="default", IpPermissions=[_tcp(443, "10.0.0.0/8")]
    )
    ssh = lay.group("ssh-world", _tcp(22, "0.0.0.0/0"), _tcp(3306, "::/0"))
    anything = lay.group("anything", {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    lay.group("web", _tcp(80, "10.1.0.0/16", to=443), _tcp(80, "10.1.2.0/24"))
    lay.group("leftover")
    lay.group("wide", _tcp(8443, "8.0.0.0/8"))
    lay.instances["x"] = _run(lay.ec2, [ssh, anything, lay.ids["web"], lay.ids["wide"]])
    lay.instances["d"] = _run(lay.ec2, [lay.ids["default"]])
    return lay


# -- reach ---------------------------------------------------------------------------


def test_reach_matches_mary_three_tiers(mary: Layout):
    r = reaching.compute(mary.inventory())
    by_groups = {tuple(mary.inventory().group_name(g) for g in k.group_ids): k for k in r.classes}
    apache, app = by_groups[("apache",)], by_groups[("appserver",)]
    assert len(apache.instance_ids) == 7 and apache.public
    assert [(o.cidr.prefixlen, o.ports.describe()) for o in r.from_outside(apache)] == [
        (0, "tcp 80")
    ]
    assert r.from_outside(app) == []  # nothing outside reaches the app servers
    assert r.class_between(apache, app).describe() == "all"
    assert r.class_between(app, apache).describe() == "tcp 80"  # 0.0.0.0/0 includes them
    assert not r.class_between(app, app)  # the app servers do not admit each other


def test_reach_cli_json_and_table_for_albert(albert: Layout):
    data = json.loads(albert.cli("reach", "--format", "json").stdout)
    (v4,) = data["versions"]
    (inet,) = v4["internet"]
    assert inet["from_cidr"] == "192.168.1.130/32" and inet["allowed"] == "tcp 22"
    (klass,) = [k for k in v4["classes"] if k["class"] == inet["to"]]
    assert klass["instances"] == albert.instances["albert"]
    table = albert.cli("reach").stdout.decode()
    assert "outside 192.168.1.130/32" in table and "tcp 22" in table
    assert "default [public]: " + albert.instances["albert"][0] + " (albert)" in table


def test_reach_vpc_filter(albert: Layout):
    bad = albert.cli("reach", "--vpc", "vpc-00000000000000000", check=2)
    assert "describe-vpcs" in bad.stderr.decode()
    (vpc,) = albert.ec2.describe_vpcs()["Vpcs"]
    data = json.loads(albert.cli("reach", "--vpc", vpc["VpcId"], "--format", "json").stdout)
    (klass,) = data["versions"][0]["classes"]
    assert klass["instances"] == albert.instances["albert"]


# -- blast ---------------------------------------------------------------------------


def test_blast_from_004s_gateway(bastion: Layout):
    r = reaching.compute(bastion.inventory())
    (gw,) = bastion.instances["gw"]
    result = blast(r, gw, 3)
    got = {h.instance_id: (h.hops, h.ports.describe()) for h in result.reached}
    for i in bastion.instances["app"]:
        assert got[i] == (1, "tcp 22")
    (elb,) = bastion.instances["elb"]
    assert got[elb] == (1, "tcp 80, 443")
    (db,) = bastion.instances["db"]
    assert got[db] == (2, "tcp 3306")
    assert len(got) == 4
    assert blast(r, gw, 1).reached == tuple(h for h in result.reached if h.hops == 1)


def test_blast_cli_table_and_unknown_instance(bastion: Layout):
    (gw,) = bastion.instances["gw"]
    out = bastion.cli("blast", "--from", gw, "--hops", "2").stdout.decode()
    assert "tcp 3306" in out and "db" in out and "tcp 22" in out
    bad = bastion.cli("blast", "--from", "i-0123456789abcdef0", check=2)
    assert "describe-instances" in bad.stderr.decode()


# -- audit ---------------------------------------------------------------------------


def test_audit_finds_each_seeded_misconfiguration(careless: Layout):
    findings = audit(careless.inventory())
    ids = careless.ids
    by = {(f.check, f.group_id): f for f in findings}
    ssh = [f for f in findings if f.check == "admin-port-open" and f.group_id == ids["ssh-world"]]
    assert {(f.cis, f.prowler[0].rsplit("_", 1)[-1]) for f in ssh} == {
        (("5.2",), "22"),
        ((), "3306"),
    }
    assert by[("all-traffic-from-anywhere", ids["anything"])].cis == ("5.2",)
    assert by[("default-group-open", ids["default"])].cis == ("5.4",)
    assert by[("default-group-in-use", ids["default"])].severity == "low"
    red = by[("redundant-rule", ids["web"])]
    assert red.rule.cidr.prefixlen == 24 and red.rule.rule_id.startswith("sgr-")
    assert by[("unused-group", ids["leftover"])].prowler == ("ec2_securitygroup_not_used",)
    assert by[("wide-public-range", ids["wide"])].severity == "medium"
    assert by[("egress-wide-open", ids["anything"])].severity == "info"
    assert findings[0].severity == "critical"  # most severe first


def test_audit_finds_nothing_on_clean_layouts(mary: Layout, bastion: Layout):
    for lay in (mary, bastion):
        findings = audit(lay.inventory())
        assert [f for f in findings if f.severity != "info"] == []
        assert {f.check for f in findings} == {"egress-wide-open", "port-open-to-internet"}
        public = {(f.group_name, f.rule.describe()) for f in findings if f.rule.cidr.prefixlen == 0}
        web = {"apache"} if lay is mary else {"elb"}
        assert {name for name, what in public if what.startswith("ingress")} == web
    assert mary.cli("audit", "--fail-on", "low").returncode == 0


def test_audit_cli_sarif_and_fail_on(careless: Layout, albert: Layout, tmp_path: Path):
    out = tmp_path / "audit.sarif"
    proc = careless.cli("audit", "--format", "sarif", "-o", str(out), "--fail-on", "high", check=1)
    assert "or worse" in proc.stderr.decode()
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.1.0" and "sarif-2.1.0" in doc["$schema"]
    (run,) = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    rule_ids = [r["id"] for r in rules]
    assert len(set(rule_ids)) == len(rule_ids)
    assert run["results"]
    for res in run["results"]:
        assert res["ruleId"] in rule_ids and rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note")
        assert res["message"]["text"]
        (loc,) = res["locations"]
        assert loc["logicalLocations"][0]["name"].startswith("sg-")
    # Albert's SSH on the default group is a high finding (CIS 5.4): exit 1 at high
    assert albert.cli("audit", "--fail-on", "high", check=1).returncode == 1
    assert albert.cli("audit", "--fail-on", "critical").returncode == 0


# -- pictures ------------------------------------------------------------------------


@needs_dot
def test_reach_svg_for_mary_and_png_for_004(mary: Layout, bastion: Layout, tmp_path: Path):
    svg = tmp_path / "mary.svg"
    mary.cli("reach", "--format", "svg", "-o", str(svg))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for label in ("apache [public]", "appserver", "internet", "tcp 80", "all"):
        assert label in texts, label
    png = tmp_path / "004.png"
    (gw,) = bastion.instances["gw"]
    bastion.cli("blast", "--from", gw, "--format", "png", "-o", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pictures_without_dot_say_to_install_graphviz(mary: Layout):
    env = {**mary.env, "PATH": "/nonexistent"}
    proc = subprocess.run(
        [str(BIN / "stockade"), "reach", "--format", "svg"], env=env, capture_output=True
    )
    assert proc.returncode == 2 and b"install graphviz" in proc.stderr
    dot = mary.cli("reach", "--format", "dot").stdout.decode()
    assert dot.startswith("digraph reach {") and "apache" in dot
