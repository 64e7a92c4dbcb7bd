"""Key pairs: CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair.

Keys are real: CreateKeyPair runs ``ssh-keygen`` (OpenSSH is everywhere Stockade runs, and
the ``cryptography`` package is not a dependency) and returns the private key once, as EC2
does; only the public key is kept. Fingerprints follow EC2: a created RSA key's is the SHA-1
of its PKCS#8 DER private key, an imported RSA key's the MD5 of its DER public key, and an
ed25519 key's the base64 SHA-256 of its OpenSSH public key blob.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading

from sqlalchemy import Row, delete, insert, select

from stockade.errors import ApiError
from stockade.service import resources
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    check_id,
    check_text,
    new_id,
)
from stockade.service.describe import Describe
from stockade.store import schema
from stockade.store.db import utcnow

K = schema.key_pairs.c

# --- DER, just enough for RSA key fingerprints --------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_int(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    return _der(0x02, body)


_RSA_ALGORITHM = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))


def _rsa_spki(e: int, n: int) -> bytes:
    """SubjectPublicKeyInfo DER of an RSA public key."""
    key = _der(0x30, _der_int(n) + _der_int(e))
    return _der(0x30, _RSA_ALGORITHM + _der(0x03, b"\x00" + key))


def _pkcs8(pkcs1_der: bytes) -> bytes:
    return _der(0x30, _der_int(0) + _RSA_ALGORITHM + _der(0x04, pkcs1_der))


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


# --- OpenSSH public keys ------------------------------------------------------------------


class _KeyFormatError(ValueError):
    pass


def _ssh_fields(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise _KeyFormatError("truncated")
        n = int.from_bytes(blob[i : i + 4], "big")
        i += 4
        if n > len(blob) - i:
            raise _KeyFormatError("truncated")
        out.append(blob[i : i + n])
        i += n
    return out


def parse_public_key(material: bytes) -> tuple[str, bytes]:
    """(key type, OpenSSH wire blob) of a public key in a format EC2 imports: OpenSSH
    (``ssh-rsa``/``ssh-ed25519 AAAA...``), RFC 4716 (``---- BEGIN SSH2 PUBLIC KEY ----``),
    PEM (``PUBLIC KEY`` or PKCS#1 ``RSA PUBLIC KEY``) or base64 DER."""
    try:
        text = material.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _KeyFormatError("not ASCII") from None
    if text.startswith("-----BEGIN "):
        return _from_der(_pem_body(text))
    if text.startswith("MI") and " " not in text:  # base64 DER, no armour
        try:
            return _from_der(base64.b64decode("".join(text.split()), validate=True))
        except (binascii.Error, ValueError):
            raise _KeyFormatError("bad base64") from None
    if text.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):
        lines, body, cont = text.splitlines()[1:], [], False
        for line in lines:
            if line.startswith("---- END SSH2 PUBLIC KEY ----"):
                break
            if cont or ":" in line:
                cont = line.endswith("\\")
                continue
            body.append(line.strip())
        encoded = "".join(body)
        name = None
    else:
        parts = text.split()
        if len(parts) < 2:
            raise _KeyFormatError("expected 'type base64 [comment]'")
        name, encoded = parts[0], parts[1]
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _KeyFormatError("bad base64") from None
    fields = _ssh_fields(blob)
    if not fields:
        raise _KeyFormatError("empty key")
    kind = fields[0].decode("ascii", "replace")
    if name is not None and name != kind:
        raise _KeyFormatError("type mismatch")
    if kind == "ssh-rsa":
        if len(fields) != 3:
            raise _KeyFormatError("bad RSA key")
        n = int.from_bytes(fields[2], "big")
        if not 1024 <= n.bit_length() <= 4096:
            raise _KeyFormatError("unsupported RSA key size")
        return "rsa", blob
    if kind == "ssh-ed25519":
        if len(fields) != 2 or len(fields[1]) != 32:
            raise _KeyFormatError("bad ed25519 key")
        return "ed25519", blob
    raise _KeyFormatError(f"unsupported key type {kind}")


def _pem_body(text: str) -> bytes:
    """The DER inside one PEM block (``PUBLIC KEY`` or ``RSA PUBLIC KEY``)."""
    lines = [line.strip() for line in text.splitlines()]
    label = lines[0][len("-----BEGIN ") :].rstrip("-")
    if label not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        raise _KeyFormatError(f"not a public key ({label})")
    try:
        end = lines.index(f"-----END {label}-----")
    except ValueError:
        raise _KeyFormatError("no END line") from None
    try:
        der = base64.b64decode("".join(lines[1:end]), validate=True)
    except (binascii.Error, ValueError):
        raise _KeyFormatError("bad base64") from None
    return der if label == "PUBLIC KEY" else _spki_of_pkcs1(der)


_RSA_OID = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"  # rsaEncryption
_ED25519_OID = b"\x06\x03\x2b\x65\x70"  # id-Ed25519


def _spki_of_pkcs1(pkcs1: bytes) -> bytes:
    return _der(0x30, _der(0x30, _RSA_OID + b"\x05\x00") + _der(0x03, b"\x00" + pkcs1))


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) items of a DER string, one level."""
    out, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise _KeyFormatError("truncated DER")
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            count = length & 0x7F
            if not 1 <= count <= 4 or i + count > len(data):
                raise _KeyFormatError("bad DER length")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > len(data):
            raise _KeyFormatError("truncated DER")
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _ssh_string(raw)


def _from_der(der: bytes) -> tuple[str, bytes]:
    """(key type, OpenSSH blob) of a DER SubjectPublicKeyInfo (RSA or Ed25519)."""
    items = _der_items(der)
    if len(items) != 1 or items[0][0] != 0x30:
        raise _KeyFormatError("not a DER sequence")
    inner = _der_items(items[0][1])
    if len(inner) != 2 or inner[0][0] != 0x30 or inner[1][0] != 0x03:
        raise _KeyFormatError("not a SubjectPublicKeyInfo")
    algorithm, bits = inner[0][1], inner[1][1]
    if not bits or bits[0] != 0:
        raise _KeyFormatError("bad BIT STRING")
    key = bits[1:]
    if algorithm.startswith(_ED25519_OID):
        if len(key) != 32:
            raise _KeyFormatError("bad ed25519 key")
        return "ed25519", _ssh_string(b"ssh-ed25519") + _ssh_string(key)
    if not algorithm.startswith(_RSA_OID):
        raise _KeyFormatError("unsupported key algorithm")
    seq = _der_items(key)
    if len(seq) != 1 or seq[0][0] != 0x30:
        raise _KeyFormatError("bad RSA key")
    numbers = _der_items(seq[0][1])
    if len(numbers) != 2 or any(tag != 0x02 for tag, _ in numbers):
        raise _KeyFormatError("bad RSA key")
    n, e = (int.from_bytes(v, "big") for _, v in numbers)
    if not 1024 <= n.bit_length() <= 4096 or e < 3:
        raise _KeyFormatError("unsupported RSA key size")
    return "rsa", _ssh_string(b"ssh-rsa") + _mpint(e) + _mpint(n)


def _openssh_line(blob: bytes) -> str:
    kind = _ssh_fields(blob)[0].decode("ascii")
    return f"{kind} {base64.b64encode(blob).decode('ascii')}"


def imported_fingerprint(key_type: str, blob: bytes) -> str:
    if key_type == "ed25519":
        return base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    _kind, e, n = _ssh_fields(blob)
    spki = _rsa_spki(int.from_bytes(e, "big"), int.from_bytes(n, "big"))
    return _colon_hex(hashlib.md5(spki, usedforsecurity=False).digest())


# --- generating keys ----------------------------------------------------------------------


# RSA generation takes a few hundred milliseconds, and actions run inside the serialised
# write transaction: keep one RSA key made ahead of time, outside any request, so that
# CreateKeyPair holds the writers' lock only for a dictionary lookup.
_spare: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=1)
_refilling = threading.Lock()


def _refill() -> None:
    if not _refilling.acquire(blocking=False):
        return

    def work() -> None:
        try:
            _spare.put_nowait(_make("rsa"))
        except (queue.Full, OSError, subprocess.SubprocessError, ApiError):
            pass
        finally:
            _refilling.release()

    threading.Thread(target=work, name="stockade-keygen", daemon=True).start()


def generate(key_type: str) -> tuple[str, str, str]:
    """(private key text, OpenSSH public key line, EC2 fingerprint) of a new key pair."""
    if key_type != "rsa":
        return _make(key_type)
    try:
        made = _spare.get_nowait()
    except queue.Empty:
        made = _make("rsa")
    _refill()
    return made


def _make(key_type: str) -> tuple[str, str, str]:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:  # pragma: no cover - OpenSSH is installed wherever Stockade runs
        raise ApiError(
            "Unsupported",
            "Stockade cannot generate key pairs here (ssh-keygen is missing); "
            "use ImportKeyPair with a key you made yourself.",
        )
    with tempfile.TemporaryDirectory(prefix="stockade-key-") as tmp:
        path = os.path.join(tmp, "key")
        args = [keygen, "-q", "-N", "", "-C", "", "-f", path]
        if key_type == "rsa":
            args += ["-t", "rsa", "-b", "2048", "-m", "PEM"]
        else:
            args += ["-t", "ed25519"]
        subprocess.run(args, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        with open(path) as f:
            private = f.read()
        with open(path + ".pub") as f:
            public = f.read().split()
    blob = base64.b64decode(public[1])
    if key_type == "rsa":
        body = "".join(
            line for line in private.strip().splitlines() if not line.startswith("-----")
        )
        fingerprint = _colon_hex(
            hashlib.sha1(_pkcs8(base64.b64decode(body)), usedforsecurity=False).digest()
        )
    else:
        fingerprint = imported_fingerprint("ed25519", blob)
    return private.rstrip("\n"), _openssh_line(blob), fingerprint


# --- actions ------------------------------------------------------------------------------


def check_key_name(value: object, param: str = "KeyName") -> str:
    return check_text(value, param, max_len=255)


def by_name(ctx: Ctx, name: str) -> Row | None:
    return ctx.conn.execute(
        select(schema.key_pairs).where(
            K.account_id == ctx.account_id, K.region == ctx.region, K.name == name
        )
    ).first()


def require(ctx: Ctx, name: str) -> Row:
    """The key pair called ``name`` (RunInstances' KeyName), or InvalidKeyPair.NotFound."""
    row = by_name(ctx, check_key_name(name))
    if row is None:
        raise ApiError("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    return row


def _store(ctx: Ctx, p: Params, name: str, key_type: str, public: str, fingerprint: str) -> Row:
    if by_name(ctx, name) is not None:
        raise ApiError("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
    key_id = new_id("key")
    ctx.conn.execute(
        insert(schema.key_pairs).values(
            id=key_id,
            account_id=ctx.account_id,
            region=ctx.region,
            name=name,
            key_type=key_type,
            fingerprint=fingerprint,
            public_key=public,
            created_at=utcnow(),
        )
    )
    resources.tag_specifications(ctx, p, "key-pair", key_id)
    ctx.log("key_pair.created", key_id, name=name)
    return ctx.conn.execute(select(schema.key_pairs).where(K.id == key_id)).one()


@action("CreateKeyPair", write=True)
def create_key_pair(ctx: Ctx, p: Params) -> Result:
    name = check_key_name(p.get("key_name"))
    key_type = p.get("key_type") or "rsa"
    if key_type not in ("rsa", "ed25519"):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({key_type}) for parameter keyType is invalid. Expecting rsa or ed25519.",
        )
    key_format = p.get("key_format") or "pem"
    if key_format not in ("pem", "ppk"):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({key_format}) for parameter keyFormat is invalid. Expecting pem or ppk.",
        )
    if key_format == "ppk":
        raise ApiError("UnsupportedOperation", "Stockade returns private keys as pem only.")
    if by_name(ctx, name) is not None:  # before the (slow) key generation
        raise ApiError("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
    private, public, fingerprint = generate(key_type)
    row = _store(ctx, p, name, key_type, public, fingerprint)
    return {
        "key_pair_id": row.id,
        "key_name": row.name,
        "key_fingerprint": row.fingerprint,
        "key_material": private,
        "tags": resources.tags_for(ctx, [row.id]).get(row.id),
    }


@action("ImportKeyPair", write=True)
def import_key_pair(ctx: Ctx, p: Params) -> Result:
    name = check_key_name(p.get("key_name"))
    material = p.get("public_key_material")
    if not material:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter PublicKeyMaterial"
        )
    try:
        key_type, blob = parse_public_key(material)
    except _KeyFormatError:
        raise ApiError(
            "InvalidKey.Format", "Key is not in valid OpenSSH public key format"
        ) from None
    row = _store(ctx, p, name, key_type, _openssh_line(blob), imported_fingerprint(key_type, blob))
    return {
        "key_pair_id": row.id,
        "key_name": row.name,
        "key_fingerprint": row.fingerprint,
        "tags": resources.tags_for(ctx, [row.id]).get(row.id),
    }


KEY_FILTERS: FilterSpec = {
    "key-name": lambda k: [k["key_name"]],
    "key-pair-id": lambda k: [k["key_pair_id"]],
    "fingerprint": lambda k: [k["key_fingerprint"]],
    "key-type": lambda k: [k["key_type"]],
}


def key_result(row: Row, tags: list | None, include_public: bool) -> Result:
    out: Result = {
        "key_pair_id": row.id,
        "key_type": row.key_type,
        "tags": tags or [],
        "create_time": row.created_at,
        "key_name": row.name,
        "key_fingerprint": row.fingerprint,
    }
    if include_public:
        out["public_key"] = f"{row.public_key} {row.name}"
    return out


def _key_rows(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[Row]:
    """The key pairs asked for by name and id, else all the caller's (by name)."""
    names = list(dict.fromkeys(p.get("key_names") or []))
    ids = p.get("key_pair_ids") or []
    if not names and not ids:
        return list(
            ctx.conn.execute(
                select(schema.key_pairs)
                .where(K.account_id == ctx.account_id, K.region == ctx.region)
                .order_by(K.name)
            )
        )
    rows = resources.get_many(ctx, ids, "key")
    seen = {r.id for r in rows}
    for name in names:
        row = require(ctx, name)
        if row.id not in seen:
            rows.append(row)
            seen.add(row.id)
    return rows


@action("DescribeKeyPairs", write=False)
def describe_key_pairs(ctx: Ctx, p: Params) -> Result:
    public = bool(p.get("include_public_key"))

    def build(ctx: Ctx, rows: list[Row]) -> list[Result]:
        tags = resources.tags_for(ctx, [r.id for r in rows])
        return [key_result(r, tags.get(r.id), public) for r in rows]

    return Describe("key_pairs", KEY_FILTERS, build, source=_key_rows).run(ctx, p)


@action("DeleteKeyPair", write=True)
def delete_key_pair(ctx: Ctx, p: Params) -> Result:
    """As on EC2, deleting a key pair that does not exist succeeds."""
    name, key_id = p.get("key_name"), p.get("key_pair_id")
    if not name and not key_id:
        raise ApiError(
            "MissingParameter", "The request must contain the parameter KeyName or KeyPairId"
        )
    if key_id:
        check_id(key_id, "key", resources.KINDS["key"].malformed)
        row = ctx.conn.execute(
            select(schema.key_pairs).where(
                K.id == key_id, K.account_id == ctx.account_id, K.region == ctx.region
            )
        ).first()
    else:
        row = by_name(ctx, check_key_name(name))
    if row is None:
        return {"return": True}
    resources.drop_tags(ctx, [row.id])
    ctx.conn.execute(delete(schema.key_pairs).where(K.id == row.id))
    ctx.log("key_pair.deleted", row.id, name=row.name)
    return {"return": True, "key_pair_id": row.id}
