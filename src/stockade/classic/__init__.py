"""The classic Amazon EC2 command-line tools (ec2-api-tools), for Stockade.

    ec2-create-group (ec2-add-group, ec2addgrp)   ec2-describe-group (ec2dgrp)
    ec2-delete-group (ec2delgrp)                  ec2-authorize (ec2auth), ec2-revoke
    ec2-describe-regions (ec2dre)
    ec2-run-instances (ec2run)                    ec2-describe-instances (ec2din)
    ec2-terminate-instances (ec2kill)             ec2-reboot-instances (ec2reboot)
    ec2-stop-instances (ec2stop)                  ec2-start-instances (ec2start)
    ec2-allocate-address (ec2allocaddr)           ec2-release-address (ec2reladdr)
    ec2-associate-address (ec2assocaddr)          ec2-disassociate-address (ec2disaddr)
    ec2-describe-addresses (ec2daddr)             ec2-describe-images (ec2dim)
    ec2-create-keypair (ec2addkey)                ec2-describe-keypairs (ec2dkey)
    ec2-delete-keypair (ec2delkey)

Each is a console script; they read EC2_URL, EC2_ACCESS_KEY and EC2_SECRET_KEY as the old
tools did (`eval "$(stockade env)"` sets them) and print the old tools' tab-separated lines.
`python -m stockade.classic COMMAND ARGS...` runs one by name.

To add a command: write a `Command` in a
module next to `groups.py`, add it to `COMMANDS`, add an entry function below and its names
to `[project.scripts]` in pyproject.toml.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from stockade.classic import addresses, groups, images, instances, keypairs, regions
from stockade.classic.core import Command, execute, run

COMMANDS: tuple[Command, ...] = (
    groups.CREATE_GROUP,
    groups.DELETE_GROUP,
    groups.DESCRIBE_GROUP,
    groups.AUTHORIZE,
    groups.REVOKE,
    regions.DESCRIBE_REGIONS,
    instances.RUN_INSTANCES,
    instances.DESCRIBE_INSTANCES,
    instances.TERMINATE_INSTANCES,
    instances.STOP_INSTANCES,
    instances.START_INSTANCES,
    instances.REBOOT_INSTANCES,
    addresses.ALLOCATE_ADDRESS,
    addresses.ASSOCIATE_ADDRESS,
    addresses.DISASSOCIATE_ADDRESS,
    addresses.RELEASE_ADDRESS,
    addresses.DESCRIBE_ADDRESSES,
    keypairs.CREATE_KEYPAIR,
    keypairs.DESCRIBE_KEYPAIRS,
    keypairs.DELETE_KEYPAIR,
    images.DESCRIBE_IMAGES,
)
BY_NAME = {name: command for command in COMMANDS for name in command.names}


def ec2_create_group() -> None:
    run(groups.CREATE_GROUP)


def ec2_delete_group() -> None:
    run(groups.DELETE_GROUP)


def ec2_describe_group() -> None:
    run(groups.DESCRIBE_GROUP)


def ec2_authorize() -> None:
    run(groups.AUTHORIZE)


def ec2_revoke() -> None:
    run(groups.REVOKE)


def ec2_describe_regions() -> None:
    run(regions.DESCRIBE_REGIONS)


def ec2_run_instances() -> None:
    run(instances.RUN_INSTANCES)


def ec2_describe_instances() -> None:
    run(instances.DESCRIBE_INSTANCES)


def ec2_terminate_instances() -> None:
    run(instances.TERMINATE_INSTANCES)


def ec2_stop_instances() -> None:
    run(instances.STOP_INSTANCES)


def ec2_start_instances() -> None:
    run(instances.START_INSTANCES)


def ec2_reboot_instances() -> None:
    run(instances.REBOOT_INSTANCES)


def ec2_allocate_address() -> None:
    run(addresses.ALLOCATE_ADDRESS)


def ec2_associate_address() -> None:
    run(addresses.ASSOCIATE_ADDRESS)


def ec2_disassociate_address() -> None:
    run(addresses.DISASSOCIATE_ADDRESS)


def ec2_release_address() -> None:
    run(addresses.RELEASE_ADDRESS)


def ec2_describe_addresses() -> None:
    run(addresses.DESCRIBE_ADDRESSES)


def ec2_create_keypair() -> None:
    run(keypairs.CREATE_KEYPAIR)


def ec2_describe_keypairs() -> None:
    run(keypairs.DESCRIBE_KEYPAIRS)


def ec2_delete_keypair() -> None:
    run(keypairs.DELETE_KEYPAIR)


def ec2_describe_images() -> None:
    run(images.DESCRIBE_IMAGES)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stockade.classic COMMAND ARGS...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BY_NAME:
        sys.stderr.write(
            "usage: python -m stockade.classic COMMAND [ARGS...]\ncommands: "
            + ", ".join(sorted(BY_NAME))
            + "\n"
        )
        return 2
    return execute(BY_NAME[args[0]], args[1:], prog=args[0])


__all__ = ["COMMANDS", "Command", "main"]
