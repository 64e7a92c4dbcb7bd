"""`explain`: is a flow allowed, and which rules decide it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from stockade.cli import app
from stockade.cli.common import (
    DatabaseUrl,
    DataDir,
    Server,
    control_plane,
    fail,
    get_json,
)


@app.command()
def explain(
    src: Annotated[
        str, typer.Option("--from", help="Instance id, private/public IP or outside IP.")
    ],
    dst: Annotated[str, typer.Option("--to", help="Instance id or IP.")],
    port: Annotated[int, typer.Option(help="Destination port (tcp/udp).")] = -1,
    protocol: Annotated[str, typer.Option(help="tcp, udp, icmp, icmpv6 or a number.")] = "tcp",
    icmp_type: Annotated[int, typer.Option(help="ICMP type (-1 any).")] = -1,
    icmp_code: Annotated[int, typer.Option(help="ICMP code (-1 any).")] = -1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    server: Server = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Is a flow allowed, and which rules decide it (both directions)?"""
    from stockade.analysis.explain import ExplainError
    from stockade.analysis.explain import as_json as decision_json
    from stockade.analysis.explain import explain as run_explain

    with control_plane(server, data_dir, database_url) as client:
        snap = get_json(client, "/_stockade/v1/state")
    try:
        decision = run_explain(
            snap, src, dst, protocol=protocol, port=port, icmp_type=icmp_type, icmp_code=icmp_code
        )
    except (ExplainError, ValueError) as exc:
        fail(str(exc))
    data = decision_json(decision)
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        out = Console()
        colour = "green" if decision.allowed else "red"
        out.print(
            f"[bold {colour}]{data['verdict']}[/bold {colour}]: {data['flow']} "
            f"from {data['from']} to {data['to']}"
        )
        for name in ("egress", "ingress"):
            side = data[name]
            if not side["checked"]:
                out.print(f"  {name}: not checked ({side['reason'] or 'not an instance'})")
                continue
            mark = "allows" if side["allowed"] else "denies"
            out.print(f"  {name}: {mark} — {side['reason']}")
            for r in side["rules"]:
                out.print(f"    {r['rule_id'] or '-'}  {r['group_id']}  {r['rule']}")
    raise typer.Exit(0 if decision.allowed else 1)
