"""The classic Amazon EC2 command-line tools (ec2-api-tools), for Stockade's security groups.

    ec2-create-group (ec2-add-group, ec2addgrp)   ec2-describe-group (ec2dgrp)
    ec2-delete-group (ec2delgrp)                  ec2-authorize (ec2auth), ec2-revoke
    ec2-describe-regions (ec2dre)

Each is a console script; they read EC2_URL, EC2_ACCESS_KEY and EC2_SECRET_KEY as the old
tools did (`eval "$(stockade env)"` sets them) and print the old tools' tab-separated lines.
`python -m stockade.classic COMMAND ARGS...` runs one by name.

To add a command (ec2-run-instances, ec2-allocate-address, ...): write a `Command` in a
module next to `groups.py`, add it to `COMMANDS`, add an entry function below and its names
to `[project.scripts]` in pyproject.toml.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from stockade.classic import groups, regions
from stockade.classic.core import Command, execute, run

COMMANDS: tuple[Command, ...] = (
    groups.CREATE_GROUP,
    groups.DELETE_GROUP,
    groups.DESCRIBE_GROUP,
    groups.AUTHORIZE,
    groups.REVOKE,
    regions.DESCRIBE_REGIONS,
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
