"""TLS for ``stockade serve --tls``: a CA and a server certificate of the data directory's
own (or the user's), and the CA-hash pin that lets an agent trust the server knowing
nothing but a short string.

Files, in ``<data>/tls/`` (0700):

- ``ca.pem`` / ``ca.key`` (0600): the CA, EC P-256, self-signed, valid ten years. Made on the
  first ``serve --tls`` and kept: its hash is what join commands carry.
- ``server.pem`` (the server certificate, then the CA) / ``server.key`` (0600): valid one
  year, its subjectAltNames from ``--host`` and ``--tls-san``. Made again when the names
  asked for are not all in it, when it has under 30 days left, or when the CA changed.
- ``user-ca.pem``: with ``--tls-cert/--tls-key``, the certificate clients trust (see
  :func:`user_cert`).
- ``serving.json``: what the last ``serve --tls`` served (endpoint, files, hash), which
  ``stockade env`` and ``stockade ca-hash`` read; removed by a plain ``serve``.

The hash is kubeadm's ``--discovery-token-ca-cert-hash``: ``sha256:`` and the hex SHA-256 of
the CA certificate's SubjectPublicKeyInfo (DER). A client that knows only the hash fetches
the CA from ``GET /_stockade/v1/ca`` (public: it is a certificate, not a secret) over
unverified TLS, checks its hash against the pin, and from then on verifies the server
with that CA (chain *and* hostname) like any TLS client: :func:`pinned_ssl_context`.

``cryptography`` is imported inside the functions that need it, so importing this module
(as the API server and the CLI do) costs nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cryptography import x509

TLS_DIR = "tls"
CA_PATH = "/_stockade/v1/ca"  # the public endpoint serving the CA certificate
CA_FILE_ENV = "STOCKADE_TLS_CA_FILE"  # set by `serve --tls` for its worker processes
RECORD = "serving.json"

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_DAYS = 30  # a server certificate with fewer days left is made again

_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")
_WILDCARD = {"", "0.0.0.0", "::", "[::]", "*"}


class TlsError(Exception):
    """A TLS set-up or trust problem; the message says what to do."""


class PinError(TlsError):
    """The server's CA is not the one the pin names."""


@dataclass(frozen=True)
class TlsFiles:
    """What ``serve --tls`` serves: ``cert`` (the chain, server certificate first) and
    ``key`` for uvicorn, ``ca`` for clients (AWS_CA_BUNDLE), and the CA's hash."""

    cert: Path
    key: Path
    ca: Path
    ca_hash: str
    sans: tuple[str, ...] = ()
    made: tuple[str, ...] = field(default=())  # what this call created: "ca", "server"

    def as_json(self) -> dict[str, Any]:
        return {
            "cert": str(self.cert),
            "key": str(self.key),
            "ca": str(self.ca),
            "ca_hash": self.ca_hash,
            "sans": list(self.sans),
        }


# --- the hash ----------------------------------------------------------------------------


def _certs(pem: bytes | str) -> list[x509.Certificate]:
    from cryptography import x509

    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsError("not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None


def ca_hash(ca_pem: bytes | str | x509.Certificate) -> str:
    """``sha256:HEX``: the SHA-256 of the (first) certificate's SubjectPublicKeyInfo, DER,
    as kubeadm's discovery-token-ca-cert-hash."""
    from cryptography.hazmat.primitives import serialization

    cert = ca_pem if not isinstance(ca_pem, bytes | str) else _certs(ca_pem)[0]
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def normalise_hash(pin: str) -> str:
    """The pin in its one spelling (``sha256:`` + 64 lower-case hex digits), or TlsError."""
    text = pin.strip().lower()
    if _HASH.match(text):
        return text
    raise TlsError(
        f"{pin!r} is not a CA hash: it looks like sha256:<64 hex digits>, as "
        "`stockade ca-hash` prints it on the control plane (check --ca-hash)"
    )


# --- files -------------------------------------------------------------------------------


def tls_dir(data_dir: str | Path) -> Path:
    path = Path(data_dir) / TLS_DIR
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically (a temporary file renamed), created with ``mode`` from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One process at a time makes or checks the files (two `serve` starting at once)."""
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _load_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(
            f"{path} is not an unencrypted PEM private key ({exc}): give a key without a passphrase"
        ) from None


def _make_ca(directory: Path) -> tuple[x509.Certificate, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stockade"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Stockade CA {socket.gethostname()}"[:64]),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clocks that lag a little
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca.key", _key_pem(key), 0o600)
    _write(directory / "ca.pem", _cert_pem(cert))
    return cert, key


def _general_names(sans: Iterable[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def cert_sans(cert: x509.Certificate) -> set[str]:
    """The certificate's subjectAltNames as strings (DNS names lower-cased, IPs compressed)."""
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    found |= {name.lower() for name in ext.get_values_for_type(x509.DNSName)}
    return found


def _make_server(
    directory: Path, ca: x509.Certificate, ca_key: Any, sans: list[str]
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0][:64])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "server.key", _key_pem(key), 0o600)
    _write(directory / "server.pem", _cert_pem(cert) + _cert_pem(ca))
    return cert


def _clean(name: str) -> str:
    """A SAN as the certificate spells it: IPs compressed (no brackets), names lower-case."""
    raw = name.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    dns = raw.lower().rstrip(".")
    if not dns or not re.fullmatch(r"(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_-]{1,63})*", dns):
        raise TlsError(f"{name!r} is not a DNS name or an IP address: check --tls-san and --host")
    return dns


def machine_addresses() -> list[str]:
    """This machine's (this namespace's) addresses, IPv6 link-local ones left out (a
    certificate cannot name their zone)."""
    from pyroute2 import IPRoute

    found: list[str] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr and not ipaddress.ip_address(addr).is_link_local:
                found.append(addr)
    return found


def default_sans(hosts: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The names the server certificate carries: each ``--host`` (a wildcard one, 0.0.0.0 or
    ::, stands for this machine's addresses), localhost, 127.0.0.1, ::1, the hostname, and
    every ``--tls-san``; in that order, each once."""
    wanted: list[str] = []
    for host in hosts:
        if host.strip() in _WILDCARD:
            wanted += machine_addresses()
        else:
            wanted.append(host)
    wanted += ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    if hostname:
        wanted.append(hostname)
        fqdn = socket.getfqdn(hostname)
        if "." in fqdn and fqdn != "localhost":
            wanted.append(fqdn)
    wanted += list(extra)
    seen: dict[str, None] = {}
    for name in wanted:
        seen.setdefault(_clean(name), None)
    return list(seen)


def ensure_server_cert(
    data_dir: str | Path, hosts: Iterable[str] = ("127.0.0.1",), sans: Iterable[str] = ()
) -> TlsFiles:
    """The data directory's CA (made if there is none) and a server certificate it signed
    naming ``hosts`` and ``sans`` (made again when it does not name them all, has under
    :data:`RENEW_DAYS` left, or was signed by another CA)."""
    directory = tls_dir(data_dir)
    wanted = default_sans(hosts, sans)
    made: list[str] = []
    with _locked(directory):
        ca_pem, ca_key_path = directory / "ca.pem", directory / "ca.key"
        if ca_pem.exists() != ca_key_path.exists():
            there, gone = (ca_pem, ca_key_path) if ca_pem.exists() else (ca_key_path, ca_pem)
            raise TlsError(
                f"{there} is there but {gone} is not: restore it, or remove {there} to make a "
                "new CA (its hash changes: every machine must then join again)"
            )
        if ca_pem.exists():
            ca = _certs(ca_pem.read_bytes())[0]
            ca_key = _load_key(ca_key_path)
        else:
            ca, ca_key = _make_ca(directory)
            made.append("ca")
        server_pem, server_key = directory / "server.pem", directory / "server.key"
        current = None
        if server_pem.exists() and server_key.exists():
            current = _certs(server_pem.read_bytes())[0]
            if not _still_good(current, ca, set(wanted), _load_key(server_key)):
                current = None
        if current is None:
            current = _make_server(directory, ca, ca_key, wanted)
            made.append("server")
        for path in (ca_key_path, server_key):  # whoever made them, they stay private
            path.chmod(0o600)
        return TlsFiles(
            server_pem,
            server_key,
            ca_pem,
            ca_hash(ca),
            tuple(sorted(cert_sans(current))),
            tuple(made),
        )


def _same_key(cert: x509.Certificate, key: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _still_good(cert: x509.Certificate, ca: x509.Certificate, wanted: set[str], key: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):  # another CA, or another kind of key
        return False
    left = cert.not_valid_after_utc - _now()
    return (
        wanted <= cert_sans(cert) and left > dt.timedelta(days=RENEW_DAYS) and _same_key(cert, key)
    )


def user_cert(
    data_dir: str | Path, cert: str | Path, key: str | Path, ca: str | Path | None = None
) -> TlsFiles:
    """``--tls-cert/--tls-key`` (and ``--tls-ca``): the user's certificate, served as given.

    The certificate clients trust, whose hash agents pin, is ``ca`` when given (its first
    certificate), else the *last* certificate of the ``cert`` file: the root when the file
    holds the whole chain, the certificate itself when it is a single self-signed one. It
    is copied to ``<data>/tls/user-ca.pem``, which ``stockade env`` names as AWS_CA_BUNDLE.
    """
    cert_path, key_path = Path(cert).resolve(), Path(key).resolve()
    for flag, path in (("--tls-cert", cert_path), ("--tls-key", key_path)):
        if not path.is_file():
            raise TlsError(f"{flag} {path}: no such file")
    try:
        chain = _certs(cert_path.read_bytes())
    except TlsError:
        raise TlsError(f"--tls-cert {cert_path} holds no PEM certificate") from None
    private = _load_key(key_path)
    if not _same_key(chain[0], private):
        raise TlsError(
            f"--tls-key {key_path} is not the key of the certificate in --tls-cert "
            f"{cert_path} (its first certificate must be the server's)"
        )
    if ca is not None:
        ca_path = Path(ca).resolve()
        if not ca_path.is_file():
            raise TlsError(f"--tls-ca {ca_path}: no such file")
        try:
            anchor = _certs(ca_path.read_bytes())[0]
        except TlsError:
            raise TlsError(f"--tls-ca {ca_path} holds no PEM certificate") from None
    else:
        anchor = chain[-1]
    directory = tls_dir(data_dir)
    with _locked(directory):
        _write(directory / "user-ca.pem", _cert_pem(anchor))
    return TlsFiles(
        cert_path,
        key_path,
        directory / "user-ca.pem",
        ca_hash(anchor),
        tuple(sorted(cert_sans(chain[0]))),
    )


def names_host(names: Iterable[str], host: str) -> bool:
    """Whether a certificate naming ``names`` names ``host`` (``*.a.example`` names
    ``b.a.example``, one label deep, as TLS clients match it)."""
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def cert_problems(cert_file: str | Path, host: str) -> list[str]:
    """What is wrong with a user's certificate for serving on ``host`` (said, not refused:
    clients may reach the server by another name)."""
    cert = _certs(Path(cert_file).read_bytes())[0]
    problems = []
    left = cert.not_valid_after_utc - _now()
    if left <= dt.timedelta(0):
        problems.append(
            f"--tls-cert {cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
            "clients will refuse it; renew it"
        )
    elif left < dt.timedelta(days=RENEW_DAYS):
        problems.append(
            f"--tls-cert {cert_file} expires on {cert.not_valid_after_utc:%Y-%m-%d}: renew it"
        )
    names = cert_sans(cert)
    if host.strip() not in _WILDCARD and not names_host(names, _clean(host)):
        problems.append(
            f"--tls-cert {cert_file} does not name {host} (it names {', '.join(sorted(names))}): "
            "clients must use one of those names"
        )
    return problems


# --- what the last `serve --tls` served -------------------------------------------------


def write_record(data_dir: str | Path, endpoint: str, files: TlsFiles) -> None:
    body = {"endpoint": endpoint, **files.as_json()}
    _write(tls_dir(data_dir) / RECORD, (json.dumps(body, indent=2) + "\n").encode())


def forget(data_dir: str | Path) -> None:
    """A plain ``serve``: the data directory is no longer served over TLS (its CA stays)."""
    with contextlib.suppress(FileNotFoundError):
        (Path(data_dir) / TLS_DIR / RECORD).unlink()


def record(data_dir: str | Path) -> dict[str, Any] | None:
    """What the last ``serve --tls`` of this data directory served, or None."""
    try:
        raw = json.loads((Path(data_dir) / TLS_DIR / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and raw.get("ca") and raw.get("ca_hash") else None


def data_ca(data_dir: str | Path) -> Path | None:
    """The CA file clients of this data directory's server trust: the one the last
    ``serve --tls`` served, else ``tls/ca.pem`` if a CA was ever made."""
    rec = record(data_dir)
    if rec and Path(rec["ca"]).is_file():
        return Path(rec["ca"])
    own = Path(data_dir) / TLS_DIR / "ca.pem"
    return own if own.is_file() else None


def data_ca_hash(data_dir: str | Path) -> str | None:
    """The hash a join command carries for this data directory's server, or None."""
    path = data_ca(data_dir)
    return ca_hash(path.read_bytes()) if path else None


# --- clients -----------------------------------------------------------------------------


def _verify_context(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    # the pinned certificate is the anchor even when it is an intermediate (--tls-cert)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https":
        raise TlsError(f"{url}: a CA hash needs an https:// URL (the server runs `serve --tls`)")
    if not parts.hostname:
        raise TlsError(f"{url}: no host in the URL")
    return parts.hostname, parts.port or 443, f"https://{parts.netloc}"


def fetch_ca(url: str, pin: str, timeout: float = 10.0) -> bytes:
    """The CA certificate of the server at ``url`` (``GET /_stockade/v1/ca``, read over TLS
    that is not verified yet), refused with :class:`PinError` unless its hash is ``pin``."""
    import httpx

    pin = normalise_hash(pin)
    _, _, base = _split(url)
    try:
        resp = httpx.get(base + CA_PATH, verify=False, timeout=timeout)  # noqa: S501 the pin checks
    except httpx.HTTPError as exc:
        raise TlsError(
            f"cannot reach {base} ({exc or type(exc).__name__}): check the URL and that "
            "`stockade serve --tls` runs there"
        ) from None
    if resp.status_code == 404:
        raise TlsError(
            f"{base} serves no CA at {CA_PATH}: is it `stockade serve --tls` (not plain HTTP)?"
        )
    if resp.status_code != 200:
        raise TlsError(f"{base}{CA_PATH}: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        got = ca_hash(resp.content)
    except TlsError:
        raise TlsError(f"{base}{CA_PATH} did not answer with a PEM certificate") from None
    if got != pin:
        raise PinError(
            f"the server's CA hash is {got}, not the one given ({pin}): check --ca-hash "
            "(`stockade ca-hash` prints it on the control plane); if it is right, something "
            "between here and the server is presenting another certificate"
        )
    return _cert_pem(_certs(resp.content)[0])


def check_server(url: str, ctx: ssl.SSLContext, timeout: float = 10.0) -> None:
    """One verified handshake with the server at ``url``: TlsError, saying what to change,
    when its certificate is not signed by the context's CA or does not name the host."""
    host, port, base = _split(url)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=host),
        ):
            return
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH / IP_ADDRESS_MISMATCH
            raise TlsError(
                f"the certificate of {base} does not name {host}: restart the server with "
                f"`stockade serve --tls --tls-san {host}` (or use a name it has)"
            ) from None
        if exc.verify_code == 64:
            raise TlsError(
                f"the certificate of {base} does not name the address {host}: restart the "
                f"server with `stockade serve --tls --tls-san {host}`"
            ) from None
        raise TlsError(
            f"the certificate of {base} is not signed by the pinned CA "
            f"({exc.verify_message}): check --ca-hash and the server's --tls-cert"
        ) from None
    except OSError as exc:
        raise TlsError(f"cannot reach {base} ({exc}): check the URL") from None


def pinned_ssl_context(
    pin: str, ca_pem: bytes | str | None = None, url: str | None = None, check: bool = True
) -> ssl.SSLContext:
    """An SSL context that trusts exactly the CA whose hash is ``pin`` and checks host names.

    With ``ca_pem`` (kept from an earlier fetch, e.g. in agent.json) its hash must be the
    pin; without it the CA is fetched from ``url`` (:func:`fetch_ca`). With ``url`` and
    ``check``, one handshake proves the server's certificate passes (:func:`check_server`).
    """
    pin = normalise_hash(pin)
    if ca_pem is None:
        if url is None:
            raise TlsError("a CA hash alone needs the server's URL to fetch its CA from")
        pem = fetch_ca(url, pin)
    else:
        pem = ca_pem.encode() if isinstance(ca_pem, str) else ca_pem
        got = ca_hash(pem)
        if got != pin:
            raise PinError(
                f"the CA certificate's hash is {got}, not the one given ({pin}): check --ca-hash"
            )
    ctx = _verify_context(pem)
    if url is not None and check:
        check_server(url, ctx)
    return ctx


def httpx_verify(
    ca_hash: str | None = None,
    ca_pem: bytes | str | None = None,
    url: str | None = None,
    ca_file: str | Path | None = None,
) -> ssl.SSLContext | bool:
    """The ``verify=`` for an httpx client of a Stockade server: pinned by ``ca_hash`` (with
    ``ca_pem`` or fetched from ``url``), else the CA in ``ca_file``, else the system's."""
    if ca_hash:
        return pinned_ssl_context(ca_hash, ca_pem, url)
    if ca_pem:
        return _verify_context(ca_pem.encode() if isinstance(ca_pem, str) else ca_pem)
    if ca_file:
        return _verify_context(Path(ca_file).read_bytes())
    return True


def client_verify(data_dir: str | Path, url: str) -> ssl.SSLContext | bool:
    """For the CLI's own clients of a local server: an https URL is verified with the data
    directory's CA when it has one."""
    if not url.startswith("https://"):
        return True
    path = data_ca(data_dir)
    return _verify_context(path.read_bytes()) if path else True
