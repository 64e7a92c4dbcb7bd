"""The API server and its state: `serve`, `env`, `reset`, `agent-token`, `account`."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stockade import config
from stockade.cli import app
from stockade.cli.common import (
    DatabaseUrl,
    DataDir,
    check_port,
    dd_flag,
    err,
    fail,
    locate,
    loopback,
    open_store,
    path_prefix,
    require_state,
    safe_url,
)

account_app = typer.Typer(no_args_is_help=True, help="Accounts and their access keys.")
app.add_typer(account_app, name="account")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = config.DEFAULT_PORT,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port (more requests per second on more cores).",
        ),
    ] = 1,
    accept_any_credentials: Annotated[
        bool,
        typer.Option(
            "--accept-any-credentials",
            help="For test suites written for moto or LocalStack: an unknown access key gets "
            "an account of its own on first use, whatever its secret (keys of real accounts "
            "are still verified). Loopback addresses only.",
        ),
    ] = False,
    use_tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve HTTPS: a CA and a server certificate of the data directory's own "
            "(made on first use, in DATA/tls), or --tls-cert/--tls-key.",
        ),
    ] = False,
    tls_san: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-san",
            metavar="NAME_OR_IP",
            help="Another name or address the server certificate carries (repeatable).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            metavar="FILE",
            help="Your own certificate (PEM, the server's first, then its chain); implies --tls.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="FILE", help="The key of --tls-cert.")
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca",
            metavar="FILE",
            help="With --tls-cert: the CA clients trust and agents pin (default: the last "
            "certificate of --tls-cert).",
        ),
    ] = None,
) -> None:
    """Run the EC2 API server."""

    import uvicorn

    from stockade.api.app import (
        WORKER_ACCEPT_ANY,
        WORKER_DATABASE_URL,
        WORKER_ENDPOINT,
        create_app,
    )
    from stockade.service.common import Config
    from stockade.store.db import agent_token

    if accept_any_credentials and not loopback(host):
        fail(
            f"--accept-any-credentials lets any key in, so it needs a loopback --host "
            f"(127.0.0.1, another 127.x.y.z, ::1 or localhost), not {host}"
        )
    check_port(host, port)
    files = _tls_files(data_dir, host, use_tls, tls_san, tls_cert, tls_key, tls_ca)
    store = open_store(data_dir, database_url)
    where = _local_name(host) if files else host
    if ":" in where and not where.startswith("["):  # an IPv6 address in a URL
        where = f"[{where}]"
    endpoint = f"{'https' if files else 'http'}://{where}:{port}"
    _tls_record(data_dir, endpoint, files)
    if workers == 1:
        app_: object = create_app(store, Config(endpoint=endpoint))
        app_.state.api.accept_any_credentials = accept_any_credentials  # type: ignore[attr-defined]
        factory = False
    else:
        os.environ[WORKER_ACCEPT_ANY] = "1" if accept_any_credentials else "0"
        # each worker process builds its own app (see stockade.api.app.worker_app)
        agent_token(store)  # created once, here, rather than raced for by the workers
        os.environ[WORKER_DATABASE_URL] = store.url
        os.environ[WORKER_ENDPOINT] = endpoint
        store.dispose()
        app_, factory = "stockade.api.app:worker_app", True
    err.print(f"[bold]Stockade[/bold] EC2 API on [cyan]{endpoint}[/cyan] ({safe_url(store.url)})")
    err.print("Use it from a shell (stockade, the AWS CLI and the ec2-* tools):")
    use = _use_line(data_dir, database_url, None if files else endpoint)  # env reads TLS's
    err.print(f"  {use}", markup=False, soft_wrap=True)
    err.print("  aws ec2 describe-security-groups; ec2-describe-group", markup=False)
    if files:
        made = " (new)" if "ca" in files.made else ""
        err.print(f"TLS: CA {files.ca}{made}, hash [bold]{files.ca_hash}[/bold]", soft_wrap=True)
        err.print(f"  certificate for {', '.join(files.sans)}", markup=False, soft_wrap=True)
    if accept_any_credentials:
        err.print(
            "[bold yellow]warning: --accept-any-credentials: any access key is accepted with "
            "any secret, each unknown key getting an account of its own (keys of real "
            "accounts are still verified). For test suites only.[/bold yellow]"
        )
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # nothing sits in front of it: no X-Forwarded-* to trust
        factory=factory,
        workers=workers if workers > 1 else None,
        ssl_certfile=str(files.cert) if files else None,
        ssl_keyfile=str(files.key) if files else None,
        # TLS: idle connections are dropped at once when closed (see stockade/api/https.py)
        **({"http": "stockade.api.https:HttpsProtocol"} if files else {}),
    )


def _tls_files(
    data_dir: str | None,
    host: str,
    use_tls: bool,
    sans: list[str] | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
):
    """The certificate ``serve`` serves (None for plain HTTP), made or checked now."""
    from stockade import tls

    if (cert is None) != (key is None):
        fail("--tls-cert and --tls-key go together: pass both (or neither, for a CA of its own)")
    if ca is not None and cert is None:
        fail("--tls-ca names the CA of --tls-cert: pass --tls-cert and --tls-key too")
    if cert is not None and sans:
        fail("--tls-san is for the certificate serve makes; yours has the names it has")
    if not (use_tls or cert):
        if sans:
            fail("--tls-san needs --tls (the names go into the server certificate)")
        return None
    data = config.data_dir(data_dir)
    try:
        if cert is not None and key is not None:
            files = tls.user_cert(data, cert, key, ca)
            for problem in tls.cert_problems(files.cert, host):
                err.print(f"[bold yellow]warning: {problem}[/bold yellow]", soft_wrap=True)
            return files
        return tls.ensure_server_cert(data, [host], sans or [])
    except tls.TlsError as exc:
        fail(str(exc))


def _local_name(host: str) -> str:
    """The host of the endpoint printed for clients: a wildcard address is not one."""
    return (
        "127.0.0.1" if host in ("0.0.0.0", "", "*") else "[::1]" if host in ("::", "[::]") else host
    )


def _tls_record(data_dir: str | None, endpoint: str, files) -> None:
    """What `stockade env` and `stockade ca-hash` read; the CA endpoint's file."""
    from stockade import tls

    data = config.data_dir(data_dir)
    if files is None:
        tls.forget(data)
        os.environ.pop(tls.CA_FILE_ENV, None)
        return
    tls.write_record(data, endpoint, files)
    os.environ[tls.CA_FILE_ENV] = str(files.ca)  # the worker processes inherit it


def _use_line(data_dir: str | None, database_url: str | None, endpoint: str | None) -> str:
    """The line to paste into a shell to use this server: ``export PATH=…/.venv/bin:$PATH;
    eval "$(stockade env …)"``, with the options that differ from the defaults."""

    words = ["stockade", "env"]
    data = config.data_dir(data_dir).resolve()
    if data != (Path.home() / ".local" / "share" / "stockade").resolve():
        words += ["--data-dir", str(data)]
    if database_url and os.environ.get("STOCKADE_DATABASE_URL") != database_url:
        # a password is not printed: the line says where it goes
        words += ["--database-url", re.sub(r"(://[^:/@]+:)[^@]+@", r"\1PASSWORD@", database_url)]
    if endpoint and endpoint != f"http://127.0.0.1:{config.DEFAULT_PORT}":
        words += ["--endpoint", endpoint]
    return f'{path_prefix()}eval "$({shlex.join(words)})"'


@app.command()
def env(
    name: Annotated[str, typer.Argument(help="Account name.")] = config.DEFAULT_ACCOUNT,
    endpoint: Annotated[
        str | None,
        typer.Option(help="API endpoint (default: the running sandbox's, or :8773)."),
    ] = None,
    region: Annotated[str, typer.Option(help="Region for AWS_DEFAULT_REGION.")] = "us-east-1",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print `export` lines for boto3, the AWS CLI and the classic ec2-* tools (with
    AWS_CA_BUNDLE when the server is `serve --tls`)."""
    from stockade import accounts, tls

    data, running = locate(data_dir)
    require_state(data, database_url, running)
    store = open_store(str(data), database_url)
    try:
        acct = accounts.get(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    served = tls.record(data)
    url = (
        endpoint
        or (running.endpoint if running else None)
        or (served["endpoint"] if served else None)
        or config.endpoint()
    )
    ca_file = tls.data_ca(data) if url.startswith("https://") else None
    secret = acct.secret_access_key
    if secret == accounts.ANY_SECRET:  # a key adopted by serve --accept-any-credentials
        secret = "any"
        err.print(
            f"note: {name} was made by `serve --accept-any-credentials` for key "
            f"{acct.access_key_id}: any secret works while the server runs with that flag"
        )
    lines = {
        "AWS_ACCESS_KEY_ID": acct.access_key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL_EC2": url,
        "EC2_URL": url,
        "EC2_ACCESS_KEY": acct.access_key_id,
        "EC2_SECRET_KEY": secret,
        "STOCKADE_ACCOUNT_ID": acct.account_id,
    }
    if ca_file:  # boto3, the AWS CLI and the ec2-* tools (botocore) verify the server with it
        lines["AWS_CA_BUNDLE"] = str(ca_file)
    for key, value in lines.items():
        print(f"export {key}={shlex.quote(value)}")


@app.command("ca-hash")
def ca_hash_cmd(
    data_dir: DataDir = None,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", metavar="FILE", help="Hash this CA certificate (PEM) instead."),
    ] = None,
) -> None:
    """Print the hash of the TLS CA (sha256:HEX, as `stockade join --ca-hash` takes it)."""
    from stockade import tls

    if ca is not None:
        try:
            print(tls.ca_hash(ca.read_bytes()))
        except (OSError, tls.TlsError) as exc:
            fail(f"--ca {ca}: {exc}")
        return
    data = config.data_dir(data_dir)
    found = tls.data_ca_hash(data)
    if found is None:
        fail(
            f"there is no TLS CA in {data}: start the server once with "
            f"`stockade serve --tls{dd_flag(data)}` (it makes one), then run this again"
        )
    print(found)


@app.command()
def reset(
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account", help="Only this account (name or 12-digit id; repeatable). Default: all."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete (nothing happens without).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete every resource of the accounts, keeping the accounts and their keys (for test
    suites, like moto's reset); each region gets its default VPC, subnets and group again.

    A running server, its agents and the sandbox see the change at once.

    Over HTTP: `POST /_stockade/v1/reset` (the agent token, or an account's SigV4 keys)."""
    from stockade import accounts
    from stockade.service import reset as reset_service

    store = open_store(data_dir, database_url)
    ids: list[str] | None = None
    if account:
        known = {a.name: a.account_id for a in accounts.list_all(store)}
        known.update({aid: aid for aid in known.values()})
        missing = [a for a in account if a not in known]
        if missing:
            fail(f"no account named {missing[0]!r} (see `stockade account list`)")
        ids = [known[a] for a in account]
    if not yes:
        found = reset_service.inventory(store, ids)
        err.print("[bold]stockade reset[/bold] would delete:")
        for item in found:
            where = ", ".join(item.regions) or "no region used yet"
            err.print(f"  account {item.name} ({item.account_id}, {where}): {item.summary()}")
        err.print(
            "and then recreate each region's default VPC, subnets and default group; "
            "the accounts and their keys stay."
        )
        err.print("Nothing was changed: run it again with [bold]--yes[/bold] to do it.")
        raise typer.Exit(1)
    done, tx = reset_service.reset(store, ids)
    if as_json:
        print(json.dumps({"revision": tx.revision, "accounts": [d.as_json() for d in done]}))
        return
    for item in done:
        print(f"reset account {item.name} {item.account_id}: deleted {item.summary()}")


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
    from stockade import accounts

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
    from stockade import accounts

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
    from stockade import accounts

    store = open_store(data_dir, database_url)
    try:
        acct = accounts.delete_account(store, name)
    except accounts.AccountError as e:
        fail(str(e))
    print(f"deleted account {acct.name} {acct.account_id}")
