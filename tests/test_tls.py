"""`stockade serve --tls`: the data directory's CA and server certificate (or the user's),
clients that verify it (boto3, the AWS CLI, the ec2-* tools, the agent endpoints), and the
CA-hash pin of clients that know nothing else."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shlex
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import SSLError
from cryptography import x509

from stockade import accounts, tls
from stockade.store.db import Store, agent_token

from conftest import BIN, Server, free_port, wait_until

SANS = ("stockade.example", "10.9.8.7")


@dataclass
class TlsServer:
    url: str
    data_dir: Path
    proc: subprocess.Popen
    store: Store

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def log(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")


def _start(data_dir: Path, *args: str) -> TlsServer:
    port = free_port()
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115
    cmd = [str(BIN / "stockade"), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen([*cmd, *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError((data_dir / "server.log").read_text())
        try:  # not verified here: the tests check verification themselves
            return httpx.get(url + "/_stockade/health", verify=False, timeout=1).is_success
        except httpx.HTTPError:
            return False

    wait_until(up, 60, "the TLS server to start")
    return TlsServer(url, data_dir, proc, Store(f"sqlite:///{data_dir}/stockade.db"))


def _stop(server: TlsServer) -> None:
    """Stop the server; it must not wait on clients' idle TLS connections (asyncio would
    wait 30 s for each one's close_notify)."""
    server.proc.terminate()
    stopped = True
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        stopped = False
        server.proc.kill()
        server.proc.wait(10)
    server.store.dispose()
    log = server.log()
    shutil.rmtree(server.data_dir, ignore_errors=True)
    assert "Traceback" not in log, log
    assert stopped, "the TLS server did not stop within 15 s of SIGTERM"


@pytest.fixture(scope="module")
def served() -> Iterator[TlsServer]:
    data = Path(tempfile.mkdtemp(prefix="stockade-tls-"))
    args = ["--tls"]
    for san in SANS:
        args += ["--tls-san", san]
    server = _start(data, *args)
    try:
        yield server
    finally:
        _stop(server)


def _stockade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "stockade"), *args], capture_output=True, text=True, timeout=60, env=env
    )


def _env_of(data_dir: Path) -> dict[str, str]:
    """What `eval "$(stockade env --data-dir D)"` exports."""
    out = _stockade("env", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    exported = {}
    for line in out.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        exported[key] = shlex.split(value)[0]
    return exported


def _shell_env(exported: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env.update(exported, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    return env


def _ec2(server: TlsServer, verify: object, acct: accounts.Account | None = None):
    acct = acct or accounts.create(server.store, f"t{os.urandom(4).hex()}")
    return boto3.client(
        "ec2",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=acct.access_key_id,
        aws_secret_access_key=acct.secret_access_key,
        verify=verify,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


def _served_cert(url: str) -> x509.Certificate:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        ctx.wrap_socket(sock) as tls_sock,
    ):
        der = tls_sock.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der)


def _spki_format() -> tuple[object, object]:
    from cryptography.hazmat.primitives import serialization

    return (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_keys_are_private_and_the_certificate_names_the_sans(served):
    files = served.data_dir / "tls"
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((files / key).stat().st_mode) == 0o600, key
    names = tls.cert_sans(_served_cert(served.url))
    assert {*SANS, "localhost", "127.0.0.1", socket.gethostname().lower()} <= names
    # the served certificate is the one in the data directory, signed by its CA
    cert = _served_cert(served.url)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(served.ca.read_bytes()))


def test_boto3_verifies_the_server_with_the_ca_bundle(served):
    ec2 = _ec2(served, str(served.ca))
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]


def test_a_client_without_the_bundle_refuses_the_server(served):
    with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        _ec2(served, True).describe_security_groups()
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(served.url + "/_stockade/health")


def test_aws_cli_and_the_classic_tools_with_stockade_env(served):
    exported = _env_of(served.data_dir)
    assert exported["AWS_CA_BUNDLE"] == str(served.ca)
    assert exported["AWS_ENDPOINT_URL_EC2"] == exported["EC2_URL"] == served.url
    env = _shell_env(exported)
    made = subprocess.run(
        ["aws", "ec2", "create-security-group", "--group-name", "web", "--description", "w"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    listed = subprocess.run(
        [str(BIN / "ec2-describe-group"), "web"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("GROUP\tsg-") and "\tweb\t" in listed.stdout


def test_the_pin_accepts_the_right_hash_and_refuses_a_wrong_one(served):
    printed = _stockade("ca-hash", "--data-dir", str(served.data_dir))
    assert printed.returncode == 0, printed.stderr
    pin = printed.stdout.strip()
    # kubeadm's discovery hash: sha256 of the CA's SubjectPublicKeyInfo
    ca = x509.load_pem_x509_certificate(served.ca.read_bytes())
    spki = ca.public_key().public_bytes(*_spki_format())
    assert pin == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert pin in served.log()  # the banner prints it too

    ctx = tls.pinned_ssl_context(pin, url=served.url)
    reply = httpx.get(served.url + "/_stockade/health", verify=ctx)
    assert reply.json()["status"] == "ok"

    wrong = "sha256:" + "ab" * 32
    with pytest.raises(tls.PinError) as caught:
        tls.pinned_ssl_context(wrong, url=served.url)
    assert f"the server's CA hash is {pin}, not the one given ({wrong})" in str(caught.value)
    assert "check --ca-hash" in str(caught.value)
    with pytest.raises(tls.PinError, match="check --ca-hash"):
        tls.pinned_ssl_context(wrong, ca_pem=served.ca.read_bytes())
    with pytest.raises(tls.TlsError, match="sha256:<64 hex digits>"):
        tls.pinned_ssl_context("28854c78", url=served.url)


def test_the_pinned_context_checks_the_host_name(served):
    ctx = tls.pinned_ssl_context(tls.ca_hash(served.ca.read_bytes()), served.ca.read_bytes())
    port = int(served.url.rsplit(":", 1)[1])
    for name in ("localhost", "stockade.example"):  # names the certificate has
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            ctx.wrap_socket(sock, server_hostname=name),
        ):
            pass
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        ctx.wrap_socket(sock, server_hostname="elsewhere.example")


def test_the_agent_endpoints_answer_over_https(served):
    token = agent_token(served.store)
    verify = tls.httpx_verify(ca_file=served.ca)
    with httpx.Client(base_url=served.url, verify=verify, timeout=10) as client:
        ca = client.get(tls.CA_PATH)  # public: a certificate, not a secret
        assert ca.status_code == 200 and ca.content == served.ca.read_bytes()
        assert client.get("/_stockade/v1/changes").status_code == 401
        changes = client.get("/_stockade/v1/changes", headers={"Authorization": f"Bearer {token}"})
        assert changes.status_code == 200 and changes.json()["revision"] >= 0
    # and the CLI's own client of them verifies with the data directory's CA
    status = _stockade("status", "--json", "--data-dir", str(served.data_dir))
    assert status.returncode == 0, status.stderr
    assert '"agents"' in status.stdout


def test_a_restart_keeps_the_ca_and_remakes_the_certificate_for_new_names(tmp_path):
    first = tls.ensure_server_cert(tmp_path, ["127.0.0.1"], ["a.example"])
    assert set(first.made) == {"ca", "server"}
    served = first.cert.read_bytes()
    again = tls.ensure_server_cert(tmp_path, ["127.0.0.1"], ["a.example"])
    assert again.made == () and again.cert.read_bytes() == served
    more = tls.ensure_server_cert(tmp_path, ["127.0.0.1"], ["b.example", "192.0.2.7"])
    assert more.made == ("server",)
    assert more.ca_hash == first.ca_hash  # pinned machines keep trusting the server
    assert {"b.example", "192.0.2.7"} <= set(more.sans)
    with pytest.raises(tls.TlsError, match="not a DNS name or an IP address"):
        tls.ensure_server_cert(tmp_path, ["127.0.0.1"], ["bad name!"])


def test_your_own_certificate_is_served_also_with_workers(tmp_path):
    # a certificate made elsewhere (another CA): its chain file, the server's first
    own = tls.ensure_server_cert(tmp_path / "elsewhere", ["127.0.0.1"], ["own.example"])
    data = Path(tempfile.mkdtemp(prefix="stockade-tls-own-"))
    server = _start(
        data,
        "--tls-cert",
        str(own.cert),
        "--tls-key",
        str(own.key),
        "--workers",
        "2",
    )
    try:
        served = _served_cert(server.url)
        assert "own.example" in tls.cert_sans(served)
        assert served == x509.load_pem_x509_certificates(own.cert.read_bytes())[0]
        assert not (data / "tls" / "ca.key").exists()  # no CA of its own was made
        exported = _env_of(data)
        bundle = exported["AWS_CA_BUNDLE"]
        assert tls.ca_hash(Path(bundle).read_bytes()) == own.ca_hash  # the chain's root
        acct = accounts.get(server.store, "default")
        ec2 = _ec2(server, bundle, acct)
        assert ec2.describe_security_groups()["SecurityGroups"]
        tls.pinned_ssl_context(own.ca_hash, url=server.url)  # the pin is the root's hash
    finally:
        _stop(server)  # with boto3's connection still open in its pool


def _serve_refused(*args: str) -> str:
    """`stockade serve ARGS` run in-process (it stops before serving): its exit status must
    be 2; returns what it printed."""
    from typer.testing import CliRunner

    from stockade.cli import app

    out = CliRunner().invoke(app, ["serve", "--port", str(free_port()), *args])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    return " ".join(out.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "/etc/hostname"], "--tls-cert and --tls-key go together"),
        (["--tls-san", "x.example"], "--tls-san needs --tls"),
        (["--tls", "--tls-san", "bad name!"], "not a DNS name or an IP address"),
    ],
)
def test_bad_tls_options_say_what_to_do(tmp_path, args, message):
    assert message in _serve_refused("--data-dir", str(tmp_path), *args)


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path):
    one = tls.ensure_server_cert(tmp_path / "one")
    two = tls.ensure_server_cert(tmp_path / "two")
    printed = _serve_refused(
        "--data-dir", str(tmp_path / "data"), "--tls-cert", str(one.cert), "--tls-key", str(two.key)
    )
    assert "is not the key of the certificate" in printed


def test_a_plain_server_serves_no_ca_and_env_names_no_bundle(sqlite_server: Server):
    reply = httpx.get(sqlite_server.url + tls.CA_PATH)
    assert reply.status_code == 404 and reply.json()["error"] == "NotServingTls"
    assert "AWS_CA_BUNDLE" not in _env_of(Path(sqlite_server.data_dir))
    with pytest.raises(tls.TlsError, match="needs an https:// URL"):
        tls.fetch_ca(sqlite_server.url, "sha256:" + "0" * 64)


def test_a_wildcard_host_puts_every_address_of_the_machine_in_the_certificate():
    shown = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip("no `ip` here")
    addresses = set()
    for line in shown.stdout.splitlines():
        words = line.split()
        address = words[3].split("/")[0]
        if "scope" in words and words[words.index("scope") + 1] != "link":
            addresses.add(str(ipaddress.ip_address(address)))
    sans = set(tls.default_sans(["0.0.0.0"]))
    assert addresses <= sans
    assert {"localhost", "127.0.0.1"} <= sans


def test_a_server_whose_certificate_another_ca_signed_is_refused(served, tmp_path):
    other = tls.ensure_server_cert(tmp_path)
    ctx = tls.pinned_ssl_context(other.ca_hash, other.ca.read_bytes())
    with pytest.raises(tls.TlsError, match="is not signed by the pinned CA"):
        tls.check_server(served.url, ctx)
    tls.check_server(served.url, tls.httpx_verify(ca_file=served.ca))  # its own CA: fine


def test_what_is_wrong_with_your_certificate_is_said(tmp_path):
    own = tls.ensure_server_cert(tmp_path, ["127.0.0.1"], ["*.lab.example"])
    assert tls.cert_problems(own.cert, "127.0.0.1") == []
    assert tls.cert_problems(own.cert, "db.lab.example") == []
    (problem,) = tls.cert_problems(own.cert, "10.9.9.9")
    assert "does not name 10.9.9.9" in problem and "*.lab.example" in problem
