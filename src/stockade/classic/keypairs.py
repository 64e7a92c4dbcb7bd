"""The key-pair commands: ec2-create-keypair (ec2-add-keypair), ec2-describe-keypairs and
ec2-delete-keypair.

The ec2-api-tools' lines: ``KEYPAIR<TAB>name<TAB>fingerprint`` (create and describe; create
prints the private key after it, as it is, for the user to save), ``KEYPAIR<TAB>name``
(delete).
"""

from __future__ import annotations

import argparse
from typing import Any

from stockade.classic.core import Command, Context, add_filter_option, api_filters

LAYOUTS = {"KEYPAIR": ("KeyName", "Fingerprint")}


def _name_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="key pair name")


def _create_arguments(p: argparse.ArgumentParser) -> None:
    _name_argument(p)
    p.add_argument(
        "--type", choices=("rsa", "ed25519"), help="key type (default rsa)", dest="key_type"
    )


def _create(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {"KeyName": a.name}
    if a.key_type:
        params["KeyType"] = a.key_type
    reply = ctx.call("CreateKeyPair", **params)
    ctx.out.record("KEYPAIR", reply.get("KeyName"), reply.get("KeyFingerprint"))
    material = reply.get("KeyMaterial") or ""
    ctx.out.stream.write(material if material.endswith("\n") else material + "\n")


CREATE_KEYPAIR = Command(
    name="ec2-create-keypair",
    aliases=("ec2addkey", "ec2-add-keypair"),
    summary="Create a key pair; prints its private key (save it: EC2 keeps no copy).",
    arguments=_create_arguments,
    run=_create,
    layouts=LAYOUTS,
    epilog="example:\n  ec2-create-keypair mykey | tail -n +2 > mykey.pem",
)


def _describe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="key pair names (default: all)")
    add_filter_option(p)


def _describe(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    if a.names:
        params["KeyNames"] = a.names
    if a.filters:
        params["Filters"] = api_filters(a.filters)
    for key in ctx.call("DescribeKeyPairs", **params).get("KeyPairs") or []:
        ctx.out.record("KEYPAIR", key.get("KeyName"), key.get("KeyFingerprint"))


DESCRIBE_KEYPAIRS = Command(
    name="ec2-describe-keypairs",
    aliases=("ec2dkey",),
    summary="Describe key pairs.",
    arguments=_describe_arguments,
    run=_describe,
    layouts=LAYOUTS,
)


def _delete(ctx: Context, a: argparse.Namespace) -> None:
    ctx.call("DeleteKeyPair", KeyName=a.name)
    ctx.out.record("KEYPAIR", a.name)


DELETE_KEYPAIR = Command(
    name="ec2-delete-keypair",
    aliases=("ec2delkey",),
    summary="Delete a key pair.",
    arguments=_name_argument,
    run=_delete,
    layouts={"KEYPAIR": ("KeyName",)},
)
