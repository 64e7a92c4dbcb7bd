"""`reach`, `audit`, `blast`: analyses of the caller's account, read through the EC2 API
with the user's credentials (the AWS_* variables `stockade env` prints), so they work
against `stockade serve` alone, the sandbox, or real EC2."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stockade.cli import app
from stockade.cli.common import fail

if TYPE_CHECKING:
    from stockade.analysis.inventory import Inventory
    from stockade.analysis.reach import Reach


class PictureFormat(StrEnum):
    table = "table"
    json = "json"
    dot = "dot"
    svg = "svg"
    png = "png"


class AuditFormat(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"


class Level(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    info = "info"


Endpoint = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="EC2 endpoint (default: AWS_ENDPOINT_URL_EC2, as `stockade env` sets it).",
    ),
]
Region = Annotated[str | None, typer.Option(help="Region (default: AWS_DEFAULT_REGION).")]
Output = Annotated[str | None, typer.Option("-o", "--output", help="Write to this file.")]


def _inventory(endpoint: str | None, region: str | None, vpc: str | None = None) -> Inventory:
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from stockade.analysis.fromapi import fetch

    session = botocore.session.get_session()
    region = region or session.get_config_variable("region") or "us-east-1"
    url = endpoint or os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("EC2_URL")
    try:
        client = session.create_client("ec2", region_name=region, endpoint_url=url or None)
        if vpc:
            try:
                client.describe_vpcs(VpcIds=[vpc])
            except ClientError as exc:
                fail(
                    f"{vpc} is not a VPC of this account in {region} "
                    f"({exc.response.get('Error', {}).get('Code')}); list them with "
                    "`aws ec2 describe-vpcs`"
                )
        return fetch(client).in_vpc(vpc)
    except NoCredentialsError:
        fail(
            "no AWS credentials: run `eval $(stockade env)` for the local account's "
            "(or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    except ClientError as exc:
        err = exc.response.get("Error", {})
        fail(
            f"{err.get('Code')}: {err.get('Message')} — check the credentials "
            "(`eval $(stockade env)`) and --endpoint-url"
        )
    except BotoCoreError as exc:
        fail(
            f"cannot reach the EC2 API at {url or 'AWS'} ({exc}); start it with `stockade serve` "
            "(or `sudo stockade up`) and `eval $(stockade env)`, or pass --endpoint-url"
        )
    raise AssertionError("unreachable")


def _write(data: str | bytes, output: str | None) -> None:
    if output:
        with open(output, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        typer.echo(f"wrote {output}", err=True)
        return
    if isinstance(data, bytes):
        if sys.stdout.isatty():
            fail("a PNG does not belong on a terminal: pass -o FILE (e.g. -o reach.png)")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    sys.stdout.write(data)


def _picture(dot: str, fmt: str, output: str | None) -> None:
    from stockade.analysis.pictures import PictureError, render

    if fmt == "dot":
        _write(dot, output)
        return
    try:
        data = render(dot, fmt)
    except PictureError as exc:
        fail(str(exc))
    _write(data if fmt == "png" else data.decode(), output)


def _console(output: str | None, width: int = 140):
    """A rich console on ``output`` (a file) or stdout: the terminal's width on a terminal,
    ``width`` columns when piped or written to a file."""
    from rich.console import Console

    if output:
        return Console(file=open(output, "w"), width=width)  # noqa: SIM115
    return Console(width=None if sys.stdout.isatty() else width)


def _who(reach: Reach, k: Any, limit: int = 6) -> str:
    from rich.markup import escape

    from stockade.analysis.pictures import class_label

    ids = [reach.inventory.instance_label(i) for i in k.instance_ids]
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return escape(f"{class_label(reach, k)}: {', '.join(ids[:limit])}{more}")


def reach_json(reaches: list[Reach]) -> dict[str, Any]:
    out: dict[str, Any] = {"versions": []}
    for r in reaches:
        inv = r.inventory
        classes = [
            {
                "class": k.index,
                "group_ids": list(k.group_ids),
                "group_names": [inv.group_name(g) for g in k.group_ids],
                "subnet": k.subnet,
                "public": k.public,
                "instances": list(k.instance_ids),
                "interfaces": [m.id for m in k.members],
            }
            for k in r.classes
        ]
        edges = [
            {"from": a.index, "to": b.index, "allowed": p.describe(), "ports": p.to_json()}
            for a, b, p in sorted(r.edges(), key=lambda e: (e[0].index, e[1].index))
        ]
        internet = [
            {
                "to": k.index,
                "from_cidr": str(o.cidr),
                "allowed": o.ports.describe(),
                "ports": o.ports.to_json(),
            }
            for k in r.classes
            if k.public
            for o in r.from_outside(k)
            if o.ports
        ]
        out["versions"].append(
            {"version": r.version, "classes": classes, "edges": edges, "internet": internet}
        )
    return out


@app.command()
def reach(
    vpc: Annotated[str | None, typer.Option(help="Only the instances of this VPC.")] = None,
    fmt: Annotated[PictureFormat, typer.Option("--format", help="Output format.")] = (
        PictureFormat.table
    ),
    output: Output = None,
    endpoint_url: Endpoint = None,
    region: Region = None,
) -> None:
    """Who can reach whom: every pair of instances, and from the internet, with ports."""
    from stockade.analysis import reach as reaching

    inv = _inventory(endpoint_url, region, vpc)
    results = [reaching.compute(inv, v) for v in reaching.versions(inv)]
    if fmt in (PictureFormat.dot, PictureFormat.svg, PictureFormat.png):
        from stockade.analysis.pictures import reach_dot

        _picture(reach_dot(results[0]), fmt.value, output)
        return
    if fmt == PictureFormat.json:
        _write(json.dumps(reach_json(results), indent=2) + "\n", output)
        return
    from rich.table import Table

    console = _console(output)
    for r in results:
        table = Table(title=f"who can reach whom (IPv{r.version})", show_lines=True)
        table.add_column("from")
        table.add_column("to")
        table.add_column("allowed")
        for k in r.classes:
            if k.public:
                for o in r.from_outside(k):
                    if o.ports:
                        src = "internet" if o.cidr.prefixlen == 0 else f"outside {o.cidr}"
                        table.add_row(src, _who(r, k), o.ports.describe())
        for a, b, ports in sorted(r.edges(), key=lambda e: (e[0].index, e[1].index)):
            table.add_row(_who(r, a), _who(r, b), ports.describe())
        if not table.rows:
            console.print(f"IPv{r.version}: no instance can reach another (or be reached)")
        else:
            console.print(table)
    console.print(
        "classes of instances alike in groups, subnet and public address answer alike; "
        "`stockade explain --from X --to Y --port N` says which rules decide one flow"
    )


@app.command()
def audit(
    fmt: Annotated[AuditFormat, typer.Option("--format", help="Output format.")] = (
        AuditFormat.table
    ),
    fail_on: Annotated[
        Level | None,
        typer.Option("--fail-on", help="Exit 1 when a finding is this severe or worse."),
    ] = None,
    output: Output = None,
    endpoint_url: Endpoint = None,
    region: Region = None,
) -> None:
    """What the groups expose: findings with severity, the rule, the fix, CIS and Prowler."""
    from stockade.analysis.audit import audit as run_audit
    from stockade.analysis.audit import failing, sarif

    findings = run_audit(_inventory(endpoint_url, region))
    bad = failing(findings, fail_on.value if fail_on else None)
    if fmt == AuditFormat.sarif:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("stockade")
        except PackageNotFoundError:
            ver = "0"
        _write(json.dumps(sarif(findings, ver), indent=2) + "\n", output)
    elif fmt == AuditFormat.json:
        _write(json.dumps([f.to_json() for f in findings], indent=2) + "\n", output)
    else:
        from rich.markup import escape
        from rich.table import Table

        console = _console(output, 160)
        if not findings:
            console.print("no findings: nothing exposed, nothing unused")
        else:
            colours = {"critical": "bold red", "high": "red", "medium": "yellow"}
            table = Table(title=f"{len(findings)} findings", show_lines=True)
            for col in ("severity", "group", "finding", "fix", "CIS / Prowler"):
                table.add_column(col, overflow="fold")
            for f in findings:
                refs = [f"CIS {c}" for c in f.cis] + list(f.prowler)
                colour = colours.get(f.severity, "")
                table.add_row(
                    f"[{colour}]{f.severity}[/{colour}]" if colour else f.severity,
                    escape(f.group_name or f.group_id),
                    escape(f.message),
                    f.fix,
                    "\n".join(refs),
                )
            console.print(table)
    if bad:
        typer.echo(
            f"{len(bad)} findings at {fail_on.value} or worse"  # type: ignore[union-attr]
            " (exit 1)",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def blast(
    start: Annotated[str, typer.Option("--from", help="The instance an attacker holds.")],
    hops: Annotated[int, typer.Option(min=1, max=64, help="How many hops to follow.")] = 3,
    fmt: Annotated[PictureFormat, typer.Option("--format", help="Output format.")] = (
        PictureFormat.table
    ),
    output: Output = None,
    endpoint_url: Endpoint = None,
    region: Region = None,
) -> None:
    """What an attacker on one instance reaches, directly and through further instances."""
    from stockade.analysis import reach as reaching
    from stockade.analysis.blast import BlastError
    from stockade.analysis.blast import blast as run_blast

    inv = _inventory(endpoint_url, region)
    r = reaching.compute(inv)
    try:
        result = run_blast(r, start, hops)
    except BlastError as exc:
        fail(str(exc))
    if fmt in (PictureFormat.dot, PictureFormat.svg, PictureFormat.png):
        from stockade.analysis.pictures import blast_dot

        _picture(blast_dot(r, result), fmt.value, output)
        return
    if fmt == PictureFormat.json:
        data = {
            "from": start,
            "max_hops": hops,
            "reached": [h.to_json(inv.instance_label) for h in result.reached],
            "outside": [
                {"cidr": str(o.cidr), "allowed": o.ports.describe()}
                for o in result.outside
                if o.ports
            ],
        }
        _write(json.dumps(data, indent=2) + "\n", output)
        return
    from rich.markup import escape
    from rich.table import Table

    console = _console(output)
    if not result.reached:
        console.print(f"{inv.instance_label(start)} reaches no other instance")
    else:
        table = Table(title=f"what an attacker on {inv.instance_label(start)} reaches")
        for col in ("hops", "instance", "ports", "path"):
            table.add_column(col)
        for h in result.reached:
            table.add_row(
                str(h.hops),
                escape(inv.instance_label(h.instance_id)),
                h.ports.describe(),
                " -> ".join(h.path),
            )
        console.print(table)
    for o in result.outside:
        if o.ports:
            console.print(f"and outside addresses in {o.cidr}: {o.ports.describe()}")
