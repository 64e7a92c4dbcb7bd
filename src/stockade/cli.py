"""The `stockade` command.

`serve` runs the API; `account` and `env` act on the data directory's database directly
(no server needed), so they work before the first `serve` and while it runs.
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stockade import accounts, config
from stockade.store.db import Store

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
account_app = typer.Typer(no_args_is_help=True, help="Accounts and their access keys.")
app.add_typer(account_app, name="account")
err = Console(stderr=True)

DataDir = Annotated[
    str | None,
    typer.Option("--data-dir", help="State directory (default ~/.local/share/stockade)."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL; PostgreSQL works too."),
]


def open_store(data_dir: str | None, database_url: str | None) -> Store:
    data = config.data_dir(data_dir)
    store = Store(config.database_url(data, database_url))
    store.migrate()
    accounts.ensure_default(store)
    return store


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = config.DEFAULT_PORT,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the EC2 API server."""
    import uvicorn

    from stockade.api.app import create_app
    from stockade.service.common import Config

    store = open_store(data_dir, database_url)
    endpoint = f"http://{host}:{port}"
    app_ = create_app(store, Config(endpoint=endpoint))
    err.print(f"[bold]Stockade[/bold] EC2 API on [cyan]{endpoint}[/cyan] ({_safe_url(store.url)})")
    err.print(
        'Use it: [green]eval "$(stockade env)"[/green] then '
        "[green]aws ec2 describe-security-groups[/green]"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False)


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@app.command()
def env(
    name: Annotated[str, typer.Argument(help="Account name.")] = accounts.DEFAULT_ACCOUNT,
    endpoint: Annotated[
        str | None, typer.Option(help="API endpoint (default http://127.0.0.1:8773).")
    ] = None,
    region: Annotated[str, typer.Option(help="Region for AWS_DEFAULT_REGION.")] = "us-east-1",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print `export` lines for boto3, the AWS CLI and the classic ec2-* tools."""
    store = open_store(data_dir, database_url)
    try:
        acct = accounts.get(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    url = config.endpoint(endpoint)
    lines = {
        "AWS_ACCESS_KEY_ID": acct.access_key_id,
        "AWS_SECRET_ACCESS_KEY": acct.secret_access_key,
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL_EC2": url,
        "EC2_URL": url,
        "EC2_ACCESS_KEY": acct.access_key_id,
        "EC2_SECRET_KEY": acct.secret_access_key,
        "STOCKADE_ACCOUNT_ID": acct.account_id,
    }
    for key, value in lines.items():
        print(f"export {key}={shlex.quote(value)}")


@app.command("agent-token")
def agent_token_cmd(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Print the token data-plane agents use to read the change log."""
    from stockade.store.db import agent_token

    print(agent_token(open_store(data_dir, database_url)))


@account_app.command("create")
def account_create(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an account (12-digit id) with an access key pair."""
    store = open_store(data_dir, database_url)
    try:
        acct = accounts.create(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    if as_json:
        data = acct.as_json()
        del data["name"]
        print(json.dumps(data))
    else:
        print(f"account {acct.name} {acct.account_id}")
        print(f"access key {acct.access_key_id}")
        print(f"secret key {acct.secret_access_key}")


@account_app.command("list")
def account_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List accounts."""
    store = open_store(data_dir, database_url)
    rows = accounts.list_all(store)
    if as_json:
        print(json.dumps([a.as_json() for a in rows]))
        return
    table = Table("name", "account id", "access key id")
    for a in rows:
        table.add_row(a.name, a.account_id, a.access_key_id)
    Console().print(table)


@account_app.command("delete")
def account_delete(name: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Delete an account and everything it owns."""
    store = open_store(data_dir, database_url)
    try:
        acct = accounts.delete_account(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    print(f"deleted account {acct.name} {acct.account_id}")


def main() -> None:
    app()
