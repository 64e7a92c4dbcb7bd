"""Key pairs and images through boto3 against the real server (SQLite and PostgreSQL).

Fingerprints are checked against OpenSSH's own conversions, not against our code.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import tempfile

import pytest
from botocore.exceptions import ClientError


def error_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def keygen(*args: str) -> str:
    return subprocess.run(["ssh-keygen", *args], check=True, capture_output=True, text=True).stdout


def pem_body(text: str) -> bytes:
    lines = [line for line in text.strip().splitlines() if not line.startswith("-----")]
    return base64.b64decode("".join(lines))


def colon(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="stockade-keys-") as d:
        yield d


def test_create_rsa_key_pair(ec2, workdir):
    made = ec2.create_key_pair(
        KeyName="albert",
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "o", "Value": "a"}]}],
    )
    assert made["KeyName"] == "albert" and made["KeyPairId"].startswith("key-")
    assert made["Tags"] == [{"Key": "o", "Value": "a"}]
    material = made["KeyMaterial"]
    assert material.startswith("-----BEGIN RSA PRIVATE KEY-----")
    path = os.path.join(workdir, "albert.pem")
    with open(path, "w") as f:
        f.write(material + "\n")
    os.chmod(path, 0o600)
    public = keygen("-y", "-f", path).split()
    # EC2's fingerprint of a key it made: SHA-1 of the PKCS#8 DER private key
    keygen("-p", "-N", "", "-m", "PKCS8", "-f", path)
    with open(path) as f:
        pkcs8 = f.read()
    assert pkcs8.startswith("-----BEGIN PRIVATE KEY-----")
    assert made["KeyFingerprint"] == colon(hashlib.sha1(pem_body(pkcs8)).digest())
    (info,) = ec2.describe_key_pairs(KeyNames=["albert"], IncludePublicKey=True)["KeyPairs"]
    assert info["KeyPairId"] == made["KeyPairId"] and info["KeyType"] == "rsa"
    assert info["KeyFingerprint"] == made["KeyFingerprint"]
    assert info["PublicKey"].split()[:2] == public[:2]
    assert "KeyMaterial" not in info and "CreateTime" in info
    code, msg = error_of(ec2.create_key_pair, KeyName="albert")
    assert (code, msg) == ("InvalidKeyPair.Duplicate", "The keypair 'albert' already exists.")


def test_create_ed25519_key_pair(ec2, workdir):
    made = ec2.create_key_pair(KeyName="mary", KeyType="ed25519")
    assert made["KeyMaterial"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    path = os.path.join(workdir, "mary")
    with open(path, "w") as f:
        f.write(made["KeyMaterial"] + "\n")
    os.chmod(path, 0o600)
    with open(path + ".pub", "w") as f:
        f.write(keygen("-y", "-f", path))
    sha = keygen("-l", "-E", "sha256", "-f", path + ".pub").split()[1].removeprefix("SHA256:")
    assert made["KeyFingerprint"].rstrip("=") == sha
    (info,) = ec2.describe_key_pairs(KeyNames=["mary"])["KeyPairs"]
    assert info["KeyType"] == "ed25519" and "PublicKey" not in info


def test_import_key_pairs(ec2, workdir):
    rsa = os.path.join(workdir, "rsa")
    keygen("-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", rsa)
    with open(rsa + ".pub", "rb") as f:
        rsa_pub = f.read()
    made = ec2.import_key_pair(KeyName="imported-rsa", PublicKeyMaterial=rsa_pub)
    # EC2's fingerprint of an imported RSA key: MD5 of the DER public key
    spki = pem_body(keygen("-e", "-m", "PKCS8", "-f", rsa + ".pub"))
    assert made["KeyFingerprint"] == colon(hashlib.md5(spki).digest())
    ed = os.path.join(workdir, "ed")
    keygen("-q", "-t", "ed25519", "-N", "", "-f", ed)
    with open(ed + ".pub", "rb") as f:
        ed_pub = f.read()
    made_ed = ec2.import_key_pair(KeyName="imported-ed", PublicKeyMaterial=ed_pub)
    sha = keygen("-l", "-E", "sha256", "-f", ed + ".pub").split()[1].removeprefix("SHA256:")
    assert made_ed["KeyFingerprint"].rstrip("=") == sha
    # RFC 4716 ("SSH2") format too
    rfc = keygen("-e", "-f", rsa + ".pub").encode()
    assert rfc.startswith(b"---- BEGIN SSH2 PUBLIC KEY ----")
    again = ec2.import_key_pair(KeyName="imported-rfc", PublicKeyMaterial=rfc)
    assert again["KeyFingerprint"] == made["KeyFingerprint"]
    for bad in (b"not a key", b"ssh-rsa AAAA", b"ssh-dss AAAAB3NzaC1kc3MAAAA=", ed_pub[:40]):
        code, msg = error_of(ec2.import_key_pair, KeyName="bad", PublicKeyMaterial=bad)
        assert code == "InvalidKey.Format", bad
        assert msg == "Key is not in valid OpenSSH public key format"
    code, _ = error_of(ec2.import_key_pair, KeyName="imported-ed", PublicKeyMaterial=ed_pub)
    assert code == "InvalidKeyPair.Duplicate"
    names = sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"])
    assert names == ["imported-ed", "imported-rfc", "imported-rsa"]


def test_describe_and_delete_key_pairs(ec2, workdir):
    a = ec2.create_key_pair(KeyName="alpha", KeyType="ed25519")
    b = ec2.create_key_pair(KeyName="beta", KeyType="ed25519")

    def names(**kw) -> list[str]:
        return sorted(k["KeyName"] for k in ec2.describe_key_pairs(**kw)["KeyPairs"])

    assert names() == ["alpha", "beta"]
    assert names(KeyPairIds=[b["KeyPairId"]]) == ["beta"]
    assert names(KeyNames=["alpha"], KeyPairIds=[b["KeyPairId"]]) == ["alpha", "beta"]
    assert names(Filters=[{"Name": "key-name", "Values": ["al*"]}]) == ["alpha"]
    assert names(Filters=[{"Name": "fingerprint", "Values": [b["KeyFingerprint"]]}]) == ["beta"]
    assert names(Filters=[{"Name": "key-type", "Values": ["rsa"]}]) == []
    code, msg = error_of(ec2.describe_key_pairs, KeyNames=["gamma"])
    assert (code, msg) == ("InvalidKeyPair.NotFound", "The key pair 'gamma' does not exist")
    code, _ = error_of(ec2.describe_key_pairs, KeyPairIds=["key-0123456789abcdef0"])
    assert code == "InvalidKeyPair.NotFound"
    assert error_of(ec2.describe_key_pairs, KeyPairIds=["key-x"])[0] == "InvalidKeyPair.Malformed"
    # a launch names its key; a missing key is refused
    code, msg = error_of(
        ec2.run_instances, ImageId="ami-eca54085", MinCount=1, MaxCount=1, KeyName="gamma"
    )
    assert (code, msg) == ("InvalidKeyPair.NotFound", "The key pair 'gamma' does not exist")
    ec2.delete_key_pair(KeyName="alpha")
    assert ec2.delete_key_pair(KeyPairId=b["KeyPairId"])["Return"] is True
    assert names() == []
    # deleting what is not there succeeds, as on EC2
    assert ec2.delete_key_pair(KeyName="alpha")["Return"] is True
    assert error_of(ec2.delete_key_pair, KeyPairId="nokey")[0] == "InvalidKeyPair.Malformed"
    assert a["KeyPairId"] != b["KeyPairId"]


def test_describe_images(ec2):
    images = ec2.describe_images()["Images"]
    ids = {i["ImageId"] for i in images}
    assert {"ami-eca54085", "ami-fba54092", "ami-e3a5408a", "ami-f1a54098"} <= ids
    assert any(i["Name"].startswith("stockade-debian") for i in images)
    assert all(i["State"] == "available" and i["Public"] for i in images)
    (web,) = ec2.describe_images(ImageIds=["ami-fba54092"])["Images"]
    assert web["Architecture"] == "x86_64" and web["RootDeviceType"] == "ebs"
    named = ec2.describe_images(Filters=[{"Name": "name", "Values": ["stockade-*"]}])["Images"]
    assert named and all(i["Name"].startswith("stockade-") for i in named)
    by_id = ec2.describe_images(Filters=[{"Name": "image-id", "Values": ["ami-f1a54098"]}])
    assert [i["ImageId"] for i in by_id["Images"]] == ["ami-f1a54098"]
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    assert len(ec2.describe_images(Owners=["amazon"])["Images"]) == len(images)
    code, msg = error_of(ec2.describe_images, ImageIds=["ami-12345678"])
    assert (code, msg) == ("InvalidAMIID.NotFound", "The image id '[ami-12345678]' does not exist")
    code, msg = error_of(ec2.describe_images, ImageIds=["ami-12345678", "ami-87654321"])
    assert code == "InvalidAMIID.NotFound" and "do not exist" in msg
    code, msg = error_of(ec2.describe_images, ImageIds=["ami-nope"])
    assert code == "InvalidAMIID.Malformed" and "ami-nope" in msg
    assert re.fullmatch(r"ami-[0-9a-f]{8}|ami-[0-9a-f]{17}", web["ImageId"])
    code, _ = error_of(ec2.describe_images, Filters=[{"Name": "flavour", "Values": ["x"]}])
    assert code == "InvalidParameterValue"
