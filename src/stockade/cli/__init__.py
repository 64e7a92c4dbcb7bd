"""The `stockade` command.

`serve` runs the API; `account` and `env` act on the data directory's database directly
(no server needed), so they work before the first `serve` and while it runs.
"""

# One module per group of commands (server, agent, explain, sandbox); each imports what it
# needs inside its commands, so `stockade --help` and quick commands start fast.

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"stockade {version('stockade')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("stockade (not installed: `make run` or `pip install -e .` installs it)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Stockade: EC2 security groups made real."""


def main() -> None:
    app()


# the command modules register their commands on `app` (imported last: they import `app`)
import stockade.cli.analysis  # noqa: E402, F401
from stockade.cli import agent, explain, sandbox, server  # noqa: E402, F401
