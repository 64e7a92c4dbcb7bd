"""Internet gateways, the Reachability Analyzer, the Network Access Analyzer and `stockade
explain`, through boto3 and the CLI against a bare `stockade serve` (no sandbox), on the
seeds' layouts; and a differential test holding them to ``policy.evaluate``."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.model import Group, Interface, Rule, State
from stockade.policy import Flow, evaluate

AMI = "ami-fba54092"
ALBERT = "192.168.1.130"
OTHER = "192.168.1.131"
STOCKADE = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "stockade"


@pytest.fixture(scope="module")
def srv(sqlite_server):
    return sqlite_server


def _launch(ec2, *groups: str) -> dict:
    inst = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, SecurityGroupIds=list(groups))
    iid = inst["Instances"][0]["InstanceId"]
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def _group(ec2, name: str) -> str:
    return ec2.create_security_group(GroupName=name, Description=name)["GroupId"]


def _allow(ec2, group: str, port: int, cidr: str | None = None, source: str | None = None):
    perm: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if cidr:
        perm["IpRanges"] = [{"CidrIp": cidr}]
    else:
        perm["UserIdGroupPairs"] = [{"GroupId": source}]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[perm])


def _analyze(ec2, source: str, destination: str, port: int | None = None, **kw: Any) -> dict:
    args: dict[str, Any] = {"Source": source, "Destination": destination, "Protocol": "tcp"}
    if port is not None:
        args["DestinationPort"] = port
    args.update(kw)
    path = ec2.create_network_insights_path(**args)["NetworkInsightsPath"]
    analysis = ec2.start_network_insights_analysis(
        NetworkInsightsPathId=path["NetworkInsightsPathId"]
    )["NetworkInsightsAnalysis"]
    assert analysis["Status"] == "succeeded", analysis
    return analysis


def _igw(ec2) -> str:
    (gw,) = ec2.describe_internet_gateways()["InternetGateways"]
    return gw["InternetGatewayId"]


# --- internet gateways ----------------------------------------------------------------------


def test_every_default_vpc_has_an_attached_internet_gateway(srv):
    ec2 = srv.client(srv.account())
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    (gw,) = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}]
    )["InternetGateways"]
    assert gw["Attachments"] == [{"State": "available", "VpcId": vpc["VpcId"]}]
    same = ec2.describe_internet_gateways(InternetGatewayIds=[gw["InternetGatewayId"]])
    assert same["InternetGateways"][0]["InternetGatewayId"] == gw["InternetGatewayId"]
    none = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": ["vpc-0000000000000000a"]}]
    )
    assert none["InternetGateways"] == []
    with pytest.raises(ClientError) as err:
        ec2.describe_internet_gateways(InternetGatewayIds=["igw-00000000000000000"])
    assert err.value.response["Error"]["Code"] == "InvalidInternetGatewayID.NotFound"


# --- Reachability Analyzer on the seeds' layouts ----------------------------------------------


def test_albert_ssh_from_his_address_only(srv):
    """Seed 002: ssh open to Albert's address, the web port to everyone."""
    ec2 = srv.client(srv.account())
    web = _group(ec2, "albert-web")
    _allow(ec2, web, 22, f"{ALBERT}/32")
    _allow(ec2, web, 80, "0.0.0.0/0")
    inst = _launch(ec2, web)
    igw = _igw(ec2)

    ok = _analyze(ec2, igw, inst["InstanceId"], 22, SourceIp=ALBERT)
    assert ok["NetworkPathFound"] is True
    hops = ok["ForwardPathComponents"]
    assert [h["Component"]["Id"] for h in hops][0] == igw
    rule = next(h["SecurityGroupRule"] for h in hops if "SecurityGroupRule" in h)
    assert rule == {
        "Cidr": f"{ALBERT}/32",
        "Direction": "ingress",
        "SecurityGroupId": web,
        "PortRange": {"From": 22, "To": 22},
        "Protocol": "6",
    }
    assert hops[-1]["Component"]["Id"] == inst["InstanceId"]
    public = inst["PublicIpAddress"]
    assert hops[0]["InboundHeader"]["DestinationAddresses"] == [public]

    denied = _analyze(ec2, igw, inst["InstanceId"], 22, SourceIp=OTHER)
    assert denied["NetworkPathFound"] is False
    (why,) = denied["Explanations"]
    assert why["ExplanationCode"] == "ENI_SG_RULES_MISMATCH"
    assert why["Direction"] == "ingress"
    assert [g["Id"] for g in why["SecurityGroups"]] == [web]
    assert why["SecurityGroups"][0]["Name"] == "albert-web"

    anyone = _analyze(ec2, igw, inst["InstanceId"], 80)
    assert anyone["NetworkPathFound"] is True
    # no SourceIp: "some internet address", and ssh is open to one of them
    assert _analyze(ec2, igw, inst["InstanceId"], 22)["NetworkPathFound"] is True
    assert _analyze(ec2, igw, inst["InstanceId"], 443)["NetworkPathFound"] is False

    paths = ec2.describe_network_insights_paths(
        Filters=[{"Name": "destination-port", "Values": ["22"]}]
    )["NetworkInsightsPaths"]
    assert len(paths) == 3 and {p["Destination"] for p in paths} == {inst["InstanceId"]}
    found = ec2.describe_network_insights_analyses(
        Filters=[{"Name": "path-found", "Values": ["false"]}]
    )["NetworkInsightsAnalyses"]
    assert {a["NetworkInsightsAnalysisId"] for a in found} >= {denied["NetworkInsightsAnalysisId"]}


def test_mary_three_tiers(srv):
    """Web open to the world, the app tier only from web, the database only from app."""
    ec2 = srv.client(srv.account())
    web, app, db = (_group(ec2, n) for n in ("web", "app", "db"))
    _allow(ec2, web, 443, "0.0.0.0/0")
    _allow(ec2, app, 8080, source=web)
    _allow(ec2, db, 3306, source=app)
    w, a, d = _launch(ec2, web), _launch(ec2, app), _launch(ec2, db)
    igw = _igw(ec2)
    verdicts = {
        (w["InstanceId"], a["InstanceId"], 8080): True,
        (a["InstanceId"], d["InstanceId"], 3306): True,
        (w["InstanceId"], d["InstanceId"], 3306): False,
        (igw, w["InstanceId"], 443): True,
        (igw, a["InstanceId"], 8080): False,
        (igw, d["InstanceId"], 3306): False,
    }
    for (src, dst, port), expected in verdicts.items():
        result = _analyze(ec2, src, dst, port)
        assert result["NetworkPathFound"] is expected, (src, dst, port, result)
        if not expected:
            codes = {(e["ExplanationCode"], e["Direction"]) for e in result["Explanations"]}
            assert codes == {("ENI_SG_RULES_MISMATCH", "ingress")}
    # interfaces as ends, and the rule that matched names the referenced group's rule
    eni = a["NetworkInterfaces"][0]["NetworkInterfaceId"]
    result = _analyze(ec2, w["NetworkInterfaces"][0]["NetworkInterfaceId"], eni, 8080)
    rules = [
        h["SecurityGroupRule"] for h in result["ForwardPathComponents"] if "SecurityGroupRule" in h
    ]
    assert [r["Direction"] for r in rules] == ["egress", "ingress"]
    assert rules[1]["SecurityGroupId"] == app


def test_bad_paths_are_ec2_errors_and_change_nothing(srv):
    ec2 = srv.client(srv.account())
    before = ec2.describe_network_insights_paths()["NetworkInsightsPaths"]
    cases = [
        (
            {"Source": "i-0123456789abcdef0", "Protocol": "tcp", "DestinationIp": "10.0.0.1"},
            "InvalidInstanceID.NotFound",
        ),
        (
            {"Source": "igw-0123456789abcdef0", "Protocol": "tcp", "DestinationIp": "10.0.0.1"},
            "InvalidInternetGatewayID.NotFound",
        ),
        (
            {"Source": _igw(ec2), "Protocol": "icmp", "DestinationIp": "10.0.0.1"},
            "InvalidParameterValue",
        ),
        ({"Source": _igw(ec2), "Protocol": "tcp"}, "MissingParameter"),
        (
            {"Source": "nonsense", "Protocol": "tcp", "DestinationIp": "10.0.0.1"},
            "InvalidParameterValue",
        ),
    ]
    for args, code in cases:
        with pytest.raises(ClientError) as err:
            ec2.create_network_insights_path(**args)
        assert err.value.response["Error"]["Code"] == code, args
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ec2.describe_network_insights_paths()["NetworkInsightsPaths"] == before
    with pytest.raises(ClientError) as err:
        ec2.start_network_insights_analysis(NetworkInsightsPathId="nip-0123456789abcdef0")
    assert err.value.response["Error"]["Code"] == "InvalidNetworkInsightsPathId.NotFound"


def test_paths_tags_and_deletes(srv):
    ec2 = srv.client(srv.account())
    igw = _igw(ec2)
    inst = _launch(ec2, _group(ec2, "tagged"))
    path = ec2.create_network_insights_path(
        Source=igw,
        Destination=inst["InstanceId"],
        Protocol="tcp",
        DestinationPort=22,
        TagSpecifications=[
            {"ResourceType": "network-insights-path", "Tags": [{"Key": "Name", "Value": "ssh"}]}
        ],
    )["NetworkInsightsPath"]
    pid = path["NetworkInsightsPathId"]
    assert path["Tags"] == [{"Key": "Name", "Value": "ssh"}]
    got = ec2.describe_network_insights_paths(Filters=[{"Name": "tag:Name", "Values": ["ssh"]}])
    assert [p["NetworkInsightsPathId"] for p in got["NetworkInsightsPaths"]] == [pid]
    aid = ec2.start_network_insights_analysis(NetworkInsightsPathId=pid)["NetworkInsightsAnalysis"][
        "NetworkInsightsAnalysisId"
    ]
    listed = ec2.describe_network_insights_analyses(NetworkInsightsPathId=pid)
    assert [a["NetworkInsightsAnalysisId"] for a in listed["NetworkInsightsAnalyses"]] == [aid]
    ec2.delete_network_insights_analysis(NetworkInsightsAnalysisId=aid)
    assert (
        ec2.describe_network_insights_analyses(NetworkInsightsPathId=pid)["NetworkInsightsAnalyses"]
        == []
    )
    ec2.delete_network_insights_path(NetworkInsightsPathId=pid)
    with pytest.raises(ClientError) as err:
        ec2.describe_network_insights_paths(NetworkInsightsPathIds=[pid])
    assert err.value.response["Error"]["Code"] == "InvalidNetworkInsightsPathId.NotFound"
    other = srv.client(srv.account())  # another account sees none of it
    assert other.describe_network_insights_paths()["NetworkInsightsPaths"] == []


# --- Network Access Analyzer: seed 003/004's questions ----------------------------------------


def _findings(ec2, match: list[dict], exclude: list[dict] | None = None) -> list[list[str]]:
    args: dict[str, Any] = {"MatchPaths": match, "ClientToken": os.urandom(8).hex()}
    if exclude:
        args["ExcludePaths"] = exclude
    scope = ec2.create_network_insights_access_scope(**args)
    sid = scope["NetworkInsightsAccessScope"]["NetworkInsightsAccessScopeId"]
    content = ec2.get_network_insights_access_scope_content(NetworkInsightsAccessScopeId=sid)
    assert content["NetworkInsightsAccessScopeContent"]["MatchPaths"]
    analysis = ec2.start_network_insights_access_scope_analysis(
        NetworkInsightsAccessScopeId=sid, ClientToken=os.urandom(8).hex()
    )["NetworkInsightsAccessScopeAnalysis"]
    assert analysis["Status"] == "succeeded"
    got = ec2.get_network_insights_access_scope_analysis_findings(
        NetworkInsightsAccessScopeAnalysisId=analysis["NetworkInsightsAccessScopeAnalysisId"]
    )
    assert analysis["FindingsFound"] == ("true" if got["AnalysisFindings"] else "false")
    out = []
    for f in got["AnalysisFindings"]:
        comps = f["FindingComponents"]
        ports = next(
            c["InboundHeader"]["DestinationPortRanges"][0] for c in comps if "InboundHeader" in c
        )
        out.append([comps[0]["Component"]["Id"], comps[-1]["Component"]["Id"], ports["From"]])
    return sorted(out)


def test_bastion_layout_what_the_internet_and_the_bastion_reach(srv):
    """Seed 004: ssh to the bastion from the office only; the private hosts take ssh from
    the bastion's group and their service port from each other."""
    ec2 = srv.client(srv.account())
    bastion_g, private_g = _group(ec2, "bastion"), _group(ec2, "private")
    _allow(ec2, bastion_g, 22, "203.0.113.0/24")
    _allow(ec2, private_g, 22, source=bastion_g)
    _allow(ec2, private_g, 5432, source=private_g)
    bastion, p1, p2 = _launch(ec2, bastion_g), _launch(ec2, private_g), _launch(ec2, private_g)
    igw = _igw(ec2)
    from_internet = _findings(
        ec2, [{"Source": {"ResourceStatement": {"ResourceTypes": ["AWS::EC2::InternetGateway"]}}}]
    )
    assert from_internet == [[igw, bastion["InstanceId"], 22]]
    from_bastion = _findings(
        ec2,
        [
            {
                "Source": {"ResourceStatement": {"Resources": [bastion["InstanceId"]]}},
                "Destination": {"ResourceStatement": {"ResourceTypes": ["AWS::EC2::Instance"]}},
            }
        ],
    )
    assert from_bastion == sorted(
        [
            [bastion["InstanceId"], p1["InstanceId"], 22],
            [bastion["InstanceId"], p2["InstanceId"], 22],
        ]
    )
    excluded = _findings(
        ec2,
        [
            {
                "Source": {"ResourceStatement": {"Resources": [bastion["InstanceId"]]}},
                "Destination": {"ResourceStatement": {"ResourceTypes": ["AWS::EC2::Instance"]}},
            }
        ],
        [{"Destination": {"ResourceStatement": {"Resources": [p2["InstanceId"]]}}}],
    )
    assert excluded == [[bastion["InstanceId"], p1["InstanceId"], 22]]


# --- differential: the API's answers against evaluate() on a state read back through Describe --


def _state_from_describe(ec2) -> tuple[State, dict[str, str], dict[str, str]]:
    """The policy's State rebuilt from DescribeSecurityGroups and DescribeInstances (not
    from the store): (state, instance -> interface, instance -> public IP)."""
    groups = []
    for g in ec2.describe_security_groups()["SecurityGroups"]:
        rules = []
        for egress, perms in ((False, g["IpPermissions"]), (True, g["IpPermissionsEgress"])):
            for p in perms:
                lo, hi = p.get("FromPort", -1), p.get("ToPort", -1)
                for r in p.get("IpRanges", []):
                    rules.append(
                        Rule(g["GroupId"], egress, p["IpProtocol"], lo, hi, cidr=r["CidrIp"])
                    )
                for r in p.get("UserIdGroupPairs", []):
                    rules.append(
                        Rule(
                            g["GroupId"], egress, p["IpProtocol"], lo, hi, ref_group_id=r["GroupId"]
                        )
                    )
        groups.append(Group(g["GroupId"], tuple(rules), g["GroupName"]))
    ifaces, by_instance, public = [], {}, {}
    for res in ec2.describe_instances()["Reservations"]:
        for inst in res["Instances"]:
            eni = inst["NetworkInterfaces"][0]
            ifaces.append(
                Interface(
                    eni["NetworkInterfaceId"],
                    inst["InstanceId"],
                    "",
                    "",
                    private_ipv4=(eni["PrivateIpAddress"],),
                    group_ids=tuple(g["GroupId"] for g in eni["Groups"]),
                )
            )
            by_instance[inst["InstanceId"]] = eni["NetworkInterfaceId"]
            if inst.get("PublicIpAddress"):
                public[inst["InstanceId"]] = inst["PublicIpAddress"]
    return State.of(groups, ifaces), by_instance, public


def _explain(srv, acct, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(STOCKADE), "explain", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=srv.env(acct),
    )


PORTS = [22, 80, 443, 3306]
layouts = st.fixed_dictionaries(
    {
        "groups": st.integers(2, 3),
        "instances": st.lists(st.integers(0, 2), min_size=2, max_size=4),
        "rules": st.lists(
            st.tuples(
                st.integers(0, 2),  # group
                st.sampled_from(PORTS),
                st.one_of(
                    st.integers(0, 2),  # a referenced group
                    st.sampled_from(["0.0.0.0/0", f"{ALBERT}/32", "172.31.0.0/16"]),
                ),
            ),
            max_size=6,
        ),
        "flows": st.lists(
            st.tuples(st.integers(-1, 3), st.integers(0, 3), st.sampled_from(PORTS)),
            min_size=3,
            max_size=6,
        ),
    }
)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=layouts)
def test_analyzer_and_explain_agree_with_evaluate(srv, layout):
    acct = srv.account()
    ec2 = srv.client(acct)
    gids = [_group(ec2, f"g{i}") for i in range(layout["groups"])]
    for g, port, peer in layout["rules"]:
        g = gids[g % len(gids)]
        try:
            if isinstance(peer, int):
                _allow(ec2, g, port, source=gids[peer % len(gids)])
            else:
                _allow(ec2, g, port, peer)
        except ClientError as exc:  # the same rule twice
            assert exc.response["Error"]["Code"] == "InvalidPermission.Duplicate"
    insts = [_launch(ec2, gids[g % len(gids)])["InstanceId"] for g in layout["instances"]]
    state, eni, public = _state_from_describe(ec2)
    igw = _igw(ec2)
    for s, d, port in layout["flows"]:
        dst = insts[d % len(insts)]
        if s == -1:  # Albert, from the internet, to the public IP
            expected = evaluate(
                state,
                Flow.tcp(
                    ipaddress.ip_address(ALBERT),
                    eni[dst],
                    port,
                    dst_addr=ipaddress.ip_address(public[dst]),
                ),
            ).allowed
            source, src_arg, kw = igw, ALBERT, {"SourceIp": ALBERT}
        else:
            src = insts[s % len(insts)]
            if src == dst:
                continue
            expected = evaluate(state, Flow.tcp(eni[src], eni[dst], port)).allowed
            source, src_arg, kw = src, src, {}
        found = _analyze(ec2, source, dst, port, **kw)["NetworkPathFound"]
        assert found is expected, (layout, s, d, port)
        out = _explain(srv, acct, "--from", src_arg, "--to", dst, "--port", str(port), "--json")
        assert out.returncode == (0 if expected else 1), out.stderr
        assert json.loads(out.stdout)["allowed"] is expected


# --- the CLI against a bare `stockade serve` -----------------------------------------------------


def test_explain_cli_ends_words_and_exit_codes(srv):
    acct = srv.account()
    ec2 = srv.client(acct)
    web = _group(ec2, "cli-web")
    _allow(ec2, web, 22, f"{ALBERT}/32")
    inst = _launch(ec2, web)
    dns, ip = inst["PublicDnsName"], inst["PublicIpAddress"]
    out = _explain(srv, acct, "--from", ALBERT, "--to", dns, "--port", "22")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"allowed: tcp/22 from {ALBERT} (outside) to ")
    assert f"at its public IP {ip}" in out.stdout
    assert f"{web} (cli-web)" in out.stdout and f"ingress tcp/22 from {ALBERT}/32" in out.stdout
    out = _explain(srv, acct, "--from", OTHER, "--to", ip, "--port", "22")
    assert out.returncode == 1
    assert f"no ingress rule of {web} (cli-web) allows tcp/22 from {OTHER}" in out.stdout
    eni = inst["NetworkInterfaces"][0]
    out = _explain(srv, acct, "--from", eni["NetworkInterfaceId"], "--to", "8.8.8.8", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["egress"]["allowed"] is True
    # another account's instance is not an end of this one's
    out = _explain(srv, srv.account(), "--from", ALBERT, "--to", inst["InstanceId"])
    assert out.returncode == 2 and "no network interface in this account" in out.stderr
    env = srv.env(acct)
    del env["AWS_SECRET_ACCESS_KEY"]
    out = subprocess.run(
        [str(STOCKADE), "explain", "--from", ALBERT, "--to", ip],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2 and "stockade env" in out.stderr


def test_explain_private_addresses_in_the_accounts_vpcs_name_instances(srv):
    """A private address inside one of the account's VPCs (default or created, primary or
    secondary block) names an instance there, so one nobody holds is an error; a private
    address outside every VPC of the account is an outside host."""
    acct = srv.account()
    ec2 = srv.client(acct)
    vpc = ec2.create_vpc(CidrBlock="10.123.0.0/16")["Vpc"]["VpcId"]
    ec2.associate_vpc_cidr_block(VpcId=vpc, CidrBlock="10.124.0.0/16")
    inst = _launch(ec2, _group(ec2, "vpc-ends"))
    for nobody in ("172.31.250.9", "10.123.0.9", "10.124.7.7"):
        out = _explain(srv, acct, "--from", nobody, "--to", inst["InstanceId"], "--port", "22")
        assert out.returncode == 2, (nobody, out.stdout, out.stderr)
        assert f"no live instance of this account has the private address {nobody}" in out.stderr
    out = _explain(srv, acct, "--from", "10.125.0.9", "--to", inst["InstanceId"], "--port", "22")
    assert out.returncode == 1 and "10.125.0.9 (outside)" in out.stdout, out.stderr


# --- the edge, on model values ---------------------------------------------------------------


def test_edge_public_addresses_and_group_references():
    """A group reference admits the members' private addresses only: to another instance's
    public IP the sender is seen with its own public IP (CIDR rules only); without a public
    IP there is no way out (CANNOT_ROUTE)."""
    from stockade.analysis.explain import explain
    from stockade.analysis.paths import Network

    rules = (
        Rule("sg-b", False, "tcp", 80, 80, ref_group_id="sg-a"),
        Rule("sg-b", False, "tcp", 443, 443, cidr="198.18.0.0/15"),
    )
    egress = Rule("sg-a", True, "-1", cidr="0.0.0.0/0")
    state = State.of(
        [Group("sg-a", (egress,)), Group("sg-b", rules)],
        [
            Interface("eni-a", "i-a", "", "", ("172.31.0.4",), group_ids=("sg-a",)),
            Interface("eni-b", "i-b", "", "", ("172.31.0.5",), group_ids=("sg-b",)),
            Interface("eni-c", "i-c", "", "", ("172.31.0.6",), group_ids=("sg-a",)),
        ],
    )
    ip = ipaddress.ip_address
    public = {"eni-a": ip("198.18.0.4"), "eni-b": ip("198.18.0.5")}
    net = Network(
        state,
        owned=frozenset(state.interfaces),
        public_ips=public,
        instances={"i-a": ("eni-a",), "i-b": ("eni-b",), "i-c": ("eni-c",)},
    )
    assert explain(net, "i-a", "i-b", port=80).allowed
    assert not explain(net, "i-a", "198.18.0.5", port=80).allowed
    hairpin = explain(net, "i-a", "ec2-198-18-0-5.compute-1.stockade.test", port=443)
    assert hairpin.allowed and hairpin.flow.src_addr == public["eni-a"]
    stuck = explain(net, "i-c", "198.18.0.5", port=443)
    assert not stuck.allowed and stuck.code == "CANNOT_ROUTE"
    assert not explain(net, "203.0.113.9", "i-c", port=80).allowed  # no public IP
