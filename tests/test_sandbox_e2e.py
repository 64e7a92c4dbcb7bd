"""The seeds' stories, end to end, in a real sandbox region (root, network namespaces).

One sandbox (2 hosts) for the module; each test uses its own account, so groups and
instances of one story never meet another's. Traffic goes only between namespaces the
sandbox made. Nothing waits a fixed time: probes retry until a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stockade.accounts import Account
from stockade.sandbox.region import Sandbox, ensure_outside
from stockade.store.db import Store

import netns
from conftest import running_sandbox, wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(netns.can_run() is not None, reason=str(netns.can_run())),
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
]

ALBERT = "192.168.1.130"
STRANGER = "192.168.1.131"


def listeners(*ports: int) -> str:
    """UserData that listens on ``ports`` (each answers "hello" and closes)."""
    lines = ["#!/bin/sh"]
    for port in ports:
        lines.append(
            'python3 -c "import socket\n'
            "s=socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('0.0.0.0',{port}))\n"
            "s.listen(64)\n"
            "while True:\n"
            "  c,_=s.accept()\n"
            "  c.sendall(b'hello')\n"
            '  c.close()" &'
        )
    lines.append("wait")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox(hosts=2, tag="skt") as box:
        yield box


class Story:
    """One account in the sandbox, with helpers to launch and probe."""

    def __init__(self, box: Sandbox) -> None:
        from stockade import accounts

        self.box = box
        store = Store(f"sqlite:///{box.data_dir}/stockade.db")
        self.account: Account = accounts.create(store, f"s{os.urandom(4).hex()}")
        store.dispose()
        import boto3

        self.ec2 = boto3.client(
            "ec2",
            endpoint_url=box.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.account.access_key_id,
            aws_secret_access_key=self.account.secret_access_key,
        )

    def group(self, name: str) -> str:
        return self.ec2.create_security_group(GroupName=name, Description=name)["GroupId"]

    def launch(
        self, count: int = 1, groups: list[str] | None = None, user_data: str = ""
    ) -> list[dict]:
        kw = {"SecurityGroups": groups} if groups else {}
        resp = self.ec2.run_instances(
            ImageId="ami-fba54092", MinCount=count, MaxCount=count, UserData=user_data, **kw
        )
        ids = [i["InstanceId"] for i in resp["Instances"]]

        def running() -> bool:
            got = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
            states = [i["State"]["Name"] for r in got for i in r["Instances"]]
            return states == ["running"] * len(ids)

        wait_until(running, timeout=60, what=f"{ids} to run")
        got = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return [i for r in got for i in r["Instances"]]

    def inside(self, instance: dict, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        from stockade.sandbox.hostd import instance_netns

        ns = instance_netns(self.box.prefix, instance["InstanceId"])
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout
        )

    def outside(self, source: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        ns = ensure_outside(self.box.prefix, source)
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout
        )


def connect_cmd(host: str, port: int) -> list[str]:
    """A connect that prints open / refused / timeout."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(1.0)\n"
        "try:\n"
        f"  s.connect(({host!r},{port})); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except (TimeoutError, socket.timeout, OSError) as e:\n"
        "  late = isinstance(e, TimeoutError) or 'timed out' in str(e)\n"
        "  print('timeout' if late else f'error {e}')\n"
    )
    return ["python3", "-c", code]


def nmap_states(result: subprocess.CompletedProcess, ports: tuple[int, ...]) -> dict[int, str]:
    states = {}
    for port in ports:
        for line in result.stdout.splitlines():
            if line.startswith(f"{port}/tcp"):
                states[port] = line.split()[1]
        if port not in states and "filtered" in result.stdout:
            states[port] = "filtered"
    return states


def until(fn, expected, what: str, timeout: float = 20):
    last = {}

    def check() -> bool:
        last["value"] = fn()
        return last["value"] == expected

    try:
        wait_until(check, timeout=timeout, what=what)
    except AssertionError:
        raise AssertionError(
            f"{what}: last saw {last.get('value')!r}, wanted {expected!r}"
        ) from None


def test_albert_default_group_and_nmap(sandbox):
    s = Story(sandbox)
    (inst,) = s.launch(user_data=listeners(22, 80))
    name = inst["PublicDnsName"]
    assert name.startswith("ec2-") and inst["PublicIpAddress"]
    # the instance's init really runs: from its own namespace the ports answer
    until(lambda: s.inside(inst, *connect_cmd("127.0.0.1", 22)).stdout.strip(), "open", "sshd up")

    def scan(source: str) -> dict[int, str]:
        return nmap_states(
            s.outside(source, "nmap", "-Pn", "-n", "-p", "22,80", "--max-retries", "1", name),
            (22, 80),
        )

    assert scan(ALBERT) == {22: "filtered", 80: "filtered"}
    default = s.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
    s.ec2.authorize_security_group_ingress(
        GroupId=default["GroupId"], IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=f"{ALBERT}/32"
    )
    until(lambda: scan(ALBERT), {22: "open", 80: "filtered"}, "22 open for Albert")
    assert scan(STRANGER) == {22: "filtered", 80: "filtered"}
    s.ec2.revoke_security_group_ingress(
        GroupId=default["GroupId"], IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=f"{ALBERT}/32"
    )
    until(lambda: scan(ALBERT), {22: "filtered", 80: "filtered"}, "22 closed again")


def test_mary_web_and_app_tiers(sandbox):
    s = Story(sandbox)
    s.group("apache")
    s.ec2.authorize_security_group_ingress(
        GroupName="apache", IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0"
    )
    web = s.launch(7, ["apache"], listeners(80))
    assert len({i["PrivateIpAddress"] for i in web}) == 7
    hosts = {i["Placement"]["AvailabilityZone"] for i in web}
    assert hosts
    for inst in web[:3]:
        until(
            lambda inst=inst: s.outside(
                ALBERT, *connect_cmd(inst["PublicIpAddress"], 80)
            ).stdout.strip(),
            "open",
            "web reachable from the world",
        )
    app_group = s.group("appserver")
    (app,) = s.launch(1, ["appserver"], listeners(8080))
    (loner,) = s.launch(1, None)
    s.ec2.authorize_security_group_ingress(
        GroupId=app_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "UserIdGroupPairs": [{"GroupName": "apache"}],
            }
        ],
    )
    # a web server reaches the app server by its public DNS name: inside, it resolves to the
    # private IP, so the group rule matches
    dns = s.inside(web[0], "dig", "+short", app["PublicDnsName"]).stdout.strip()
    assert dns == app["PrivateIpAddress"]
    until(
        lambda: s.inside(web[0], *connect_cmd(app["PublicDnsName"], 8080)).stdout.strip(),
        "open",
        "web -> app:8080",
    )
    assert s.outside(ALBERT, *connect_cmd(app["PublicIpAddress"], 8080)).stdout.strip() == "timeout"
    assert s.inside(loner, *connect_cmd(app["PrivateIpAddress"], 8080)).stdout.strip() == "timeout"
    s.ec2.revoke_security_group_ingress(
        GroupId=app_group,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8080,
                "ToPort": 8080,
                "UserIdGroupPairs": [{"GroupName": "apache"}],
            }
        ],
    )
    until(
        lambda: s.inside(web[1], *connect_cmd(app["PrivateIpAddress"], 8080)).stdout.strip(),
        "timeout",
        "revoked",
    )


def test_bastion_layout_and_a_compromised_gateway(sandbox):
    s = Story(sandbox)
    ids = {n: s.group(n) for n in ("gw", "elb", "app", "db")}

    def from_group(port: int, src: str) -> dict:
        return {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": ids[src]}],
        }

    s.ec2.authorize_security_group_ingress(
        GroupId=ids["gw"], IpProtocol="tcp", FromPort=62222, ToPort=62222, CidrIp=f"{ALBERT}/32"
    )
    s.ec2.authorize_security_group_ingress(
        GroupId=ids["app"],
        IpPermissions=[from_group(80, "elb"), from_group(443, "elb"), from_group(22, "gw")],
    )
    s.ec2.authorize_security_group_ingress(
        GroupId=ids["db"], IpPermissions=[from_group(3306, "app")]
    )
    (gw,) = s.launch(1, ["gw"], listeners(62222))
    (elb,) = s.launch(1, ["elb"])
    (app,) = s.launch(1, ["app"], listeners(22, 80, 443))
    (db,) = s.launch(1, ["db"], listeners(3306))

    def reach(src: dict, dst: dict, port: int) -> str:
        return s.inside(src, *connect_cmd(dst["PrivateIpAddress"], port)).stdout.strip()

    until(
        lambda: s.outside(ALBERT, *connect_cmd(gw["PublicIpAddress"], 62222)).stdout.strip(),
        "open",
        "Albert -> gw",
    )
    assert (
        s.outside(STRANGER, *connect_cmd(gw["PublicIpAddress"], 62222)).stdout.strip() == "timeout"
    )
    assert s.outside(ALBERT, *connect_cmd(app["PublicIpAddress"], 22)).stdout.strip() == "timeout"
    until(lambda: reach(gw, app, 22), "open", "gw -> app:22")
    until(lambda: reach(elb, app, 80), "open", "elb -> app:80")
    until(lambda: reach(elb, app, 443), "open", "elb -> app:443")
    until(lambda: reach(app, db, 3306), "open", "app -> db:3306")
    # what a compromised gateway can and cannot reach
    assert reach(gw, db, 3306) == "timeout"
    assert reach(gw, app, 80) == "timeout"
    assert reach(elb, app, 22) == "timeout"


def test_elastic_ip_split_horizon_dns_and_group_auth(sandbox):
    s = Story(sandbox)
    s.group("dbserver")
    s.group("appserver")
    (db,) = s.launch(1, ["dbserver"], listeners(3306))
    (app,) = s.launch(1, ["appserver"])
    eip = s.ec2.allocate_address(Domain="vpc")
    s.ec2.associate_address(InstanceId=db["InstanceId"], AllocationId=eip["AllocationId"])
    db = s.ec2.describe_instances(InstanceIds=[db["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert db["PublicIpAddress"] == eip["PublicIp"]
    name = db["PublicDnsName"]
    # split horizon: inside the region the name is the private IP, outside the Elastic IP
    until(
        lambda: s.inside(app, "dig", "+short", name).stdout.strip(),
        db["PrivateIpAddress"],
        "inside answer",
    )
    assert s.outside(ALBERT, "dig", "+short", name).stdout.strip() == eip["PublicIp"]
    # seed 000: ec2-authorize dbserver -p 3306 -P tcp -u USER -o appserver
    env = dict(
        os.environ,
        EC2_URL=sandbox.endpoint,
        EC2_ACCESS_KEY=s.account.access_key_id,
        EC2_SECRET_KEY=s.account.secret_access_key,
    )
    bin_dir = Path(__file__).resolve().parent.parent / ".venv" / "bin"
    tool = shutil.which("ec2-authorize") or str(bin_dir / "ec2-authorize")
    out = subprocess.run(
        [
            tool,
            "dbserver",
            "-p",
            "3306",
            "-P",
            "tcp",
            "-u",
            s.account.account_id,
            "-o",
            "appserver",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    until(
        lambda: s.inside(app, *connect_cmd(name, 3306)).stdout.strip(),
        "open",
        "app -> db by DNS name",
    )
    # the metadata service knows who asks
    got = s.inside(
        db, "curl", "-s", "http://169.254.169.254/latest/meta-data/public-ipv4"
    ).stdout.strip()
    assert got == eip["PublicIp"]
    got = s.inside(
        app, "curl", "-s", "http://169.254.169.254/latest/meta-data/instance-id"
    ).stdout.strip()
    assert got == app["InstanceId"]


def test_refused_is_not_a_timeout_and_egress_rules_bind(sandbox):
    s = Story(sandbox)
    g = s.group("probe")
    (inst,) = s.launch(1, ["probe"], listeners(80))
    s.ec2.authorize_security_group_ingress(
        GroupId=g, IpProtocol="tcp", FromPort=3389, ToPort=3389, CidrIp="0.0.0.0/0"
    )
    # port open in the group, nothing listening: refused; blocked by the group: timeout
    until(
        lambda: s.outside(ALBERT, *connect_cmd(inst["PublicIpAddress"], 3389)).stdout.strip(),
        "refused",
        "3389 refused",
    )
    assert s.outside(ALBERT, *connect_cmd(inst["PublicIpAddress"], 21)).stdout.strip() == "timeout"
    # outbound: allowed by default, then cut when the egress rule goes
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ensure_outside(sandbox.prefix, "203.0.113.80"),
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            "203.0.113.80",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        until(
            lambda: s.inside(inst, *connect_cmd("203.0.113.80", 8000)).stdout.strip(),
            "open",
            "egress open",
        )
        s.ec2.revoke_security_group_egress(
            GroupId=g, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        )
        until(
            lambda: s.inside(inst, *connect_cmd("203.0.113.80", 8000)).stdout.strip(),
            "timeout",
            "egress cut",
        )
    finally:
        server.kill()
        server.wait()


def test_a_rule_added_while_a_client_retries(sandbox):
    s = Story(sandbox)
    g = s.group("late")
    (inst,) = s.launch(1, ["late"], listeners(8443))
    ip = inst["PublicIpAddress"]
    code = (
        "import socket,time\n"
        "end=time.time()+30\n"
        "while time.time()<end:\n"
        "  s=socket.socket(); s.settimeout(0.3)\n"
        "  try:\n"
        f"    s.connect(({ip!r},8443)); print('connected'); break\n"
        "  except OSError: pass\n"
        "  finally: s.close()\n"
        "else: print('gave up')\n"
    )
    ns = ensure_outside(sandbox.prefix, ALBERT)
    client = subprocess.Popen(
        ["ip", "netns", "exec", ns, "python3", "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert s.outside(STRANGER, *connect_cmd(ip, 8443)).stdout.strip() == "timeout"
        s.ec2.authorize_security_group_ingress(
            GroupId=g, IpProtocol="tcp", FromPort=8443, ToPort=8443, CidrIp=f"{ALBERT}/32"
        )
        out, _ = client.communicate(timeout=40)
        assert out.strip() == "connected"
    finally:
        client.kill()


def stockade_cli(box: Sandbox, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    exe = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "stockade"
    return subprocess.run(
        [shutil.which("stockade") or str(exe), *args, "--data-dir", str(box.data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "STOCKADE_ENDPOINT": box.endpoint},
    )


def test_demo_albert_shows_the_scan_change(sandbox):
    out = stockade_cli(sandbox, "demo", "albert")
    assert out.returncode == 0, out.stderr
    scans = out.stdout.split("nmap -Pn")
    assert "22/tcp filtered" in scans[1] and "80/tcp filtered" in scans[1]
    assert "22/tcp open" in scans[2] and "80/tcp filtered" in scans[2]
    assert "22/tcp filtered" in scans[3]
    assert "Traceback" not in out.stdout + out.stderr


def test_explain_and_status_match_the_kernel(sandbox):
    s = Story(sandbox)
    g = s.group("explained")
    (inst,) = s.launch(1, ["explained"], listeners(22, 80))
    s.ec2.authorize_security_group_ingress(
        GroupId=g, IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp=f"{ALBERT}/32"
    )
    ip = inst["PublicIpAddress"]
    until(lambda: s.outside(ALBERT, *connect_cmd(ip, 80)).stdout.strip(), "open", "80 open")
    for port, kernel in ((80, "open"), (22, "timeout")):
        assert s.outside(ALBERT, *connect_cmd(ip, port)).stdout.strip() == kernel
        out = subprocess.run(  # signed with the account's own keys, like the AWS CLI
            [str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "stockade"), "explain"]
            + ["--from", ALBERT]
            + ["--to", inst["InstanceId"], "--port", str(port), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "AWS_ACCESS_KEY_ID": s.account.access_key_id,
                "AWS_SECRET_ACCESS_KEY": s.account.secret_access_key,
                "AWS_ENDPOINT_URL_EC2": sandbox.endpoint,
            },
        )
        import json

        verdict = json.loads(out.stdout)
        assert verdict["allowed"] == (kernel == "open"), verdict
        assert out.returncode == (0 if kernel == "open" else 1)
    status = stockade_cli(sandbox, "status", "--json")
    data = __import__("json").loads(status.stdout)
    assert {a["host"] for a in data["agents"]} == {"host-1", "host-2"}
    assert inst["InstanceId"] in {i["instance_id"] for i in data["interfaces"]}


def test_stop_start_reboot_terminate(sandbox):
    s = Story(sandbox)
    g = s.group("life")
    s.ec2.authorize_security_group_ingress(
        GroupId=g, IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0"
    )
    script = listeners(80).replace("#!/bin/sh\n", "#!/bin/sh\necho booted\n")
    (inst,) = s.launch(1, ["life"], script)
    iid, first_ip = inst["InstanceId"], inst["PublicIpAddress"]
    until(lambda: s.outside(ALBERT, *connect_cmd(first_ip, 80)).stdout.strip(), "open", "up")
    log = sandbox.data_dir / "instances" / f"{iid}.log"

    # reboot: the instance's init runs again
    s.ec2.reboot_instances(InstanceIds=[iid])
    until(lambda: log.read_text().count("booted"), 2, "a second boot")
    until(lambda: s.outside(ALBERT, *connect_cmd(first_ip, 80)).stdout.strip(), "open", "back")

    # stop: unreachable, its namespace gone; the private IP stays, the public IP changes
    from stockade.sandbox.hostd import instance_netns
    from stockade.sandbox.net import exists

    s.ec2.stop_instances(InstanceIds=[iid])

    def state() -> str:
        got = s.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        return got["State"]["Name"]

    until(state, "stopped", "stopped", timeout=30)
    assert not exists(instance_netns(sandbox.prefix, iid))
    assert s.outside(ALBERT, *connect_cmd(first_ip, 80)).stdout.strip() == "timeout"
    s.ec2.start_instances(InstanceIds=[iid])
    until(state, "running", "running again", timeout=60)
    again = s.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert again["PrivateIpAddress"] == inst["PrivateIpAddress"]
    assert again["PublicIpAddress"] != first_ip
    until(
        lambda: s.outside(ALBERT, *connect_cmd(again["PublicIpAddress"], 80)).stdout.strip(),
        "open",
        "reachable at the new public IP",
    )

    # terminate: the namespace goes away for good
    s.ec2.terminate_instances(InstanceIds=[iid])
    until(state, "terminated", "terminated", timeout=30)
    assert not exists(instance_netns(sandbox.prefix, iid))


def test_hairpin_through_a_public_ip_matches_only_cidr_rules(sandbox):
    s = Story(sandbox)
    front = s.group("front")
    back = s.group("back")
    s.ec2.authorize_security_group_ingress(
        GroupId=back,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "UserIdGroupPairs": [{"GroupId": front}],
            }
        ],
    )
    (a,) = s.launch(1, ["front"])
    (b,) = s.launch(1, ["back"], listeners(80))
    until(
        lambda: s.inside(a, *connect_cmd(b["PrivateIpAddress"], 80)).stdout.strip(),
        "open",
        "a -> b by private IP (group rule)",
    )
    # by b's public IP the packet arrives from a's public IP: the group rule cannot match
    assert s.inside(a, *connect_cmd(b["PublicIpAddress"], 80)).stdout.strip() == "timeout"
    s.ec2.authorize_security_group_ingress(
        GroupId=back, IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp=f"{a['PublicIpAddress']}/32"
    )
    until(
        lambda: s.inside(a, *connect_cmd(b["PublicIpAddress"], 80)).stdout.strip(),
        "open",
        "a -> b by public IP (CIDR rule of a's public address)",
    )
