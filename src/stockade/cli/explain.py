"""`explain`: is a flow allowed, and which rules decide it (decided on the server).

`stockade explain ...` runs in :mod:`stockade.launch` without this module (fast path, no
typer); this command is what `stockade --help` lists, and the same client.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stockade.cli import app


@app.command()
def explain(
    src: Annotated[
        str,
        typer.Option(
            "--from",
            help="Instance id, interface id, private/public/Elastic IP, EC2 DNS name "
            "or outside IP.",
        ),
    ],
    dst: Annotated[str, typer.Option("--to", help="The same kinds of end as --from.")],
    port: Annotated[int, typer.Option(help="Destination port (tcp/udp).")] = -1,
    protocol: Annotated[str, typer.Option(help="tcp, udp, icmp, icmpv6 or a number.")] = "tcp",
    icmp_type: Annotated[int, typer.Option(help="ICMP type (-1 any).")] = -1,
    icmp_code: Annotated[int, typer.Option(help="ICMP code (-1 any).")] = -1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    server: Annotated[
        str | None,
        typer.Option(help="EC2 endpoint (default $AWS_ENDPOINT_URL_EC2 or 127.0.0.1:8773)."),
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Region (default $AWS_DEFAULT_REGION).")
    ] = None,
) -> None:
    """Is a flow allowed, and which rules decide it (both directions)? Signed with your
    keys (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, as `stockade env` prints them); exit 0
    when allowed, 1 when denied."""
    from stockade.launch import explain_main

    argv = ["--from", src, "--to", dst, "--port", str(port), "--protocol", protocol]
    argv += ["--icmp-type", str(icmp_type), "--icmp-code", str(icmp_code)]
    if as_json:
        argv.append("--json")
    if server:
        argv += ["--server", server]
    if region:
        argv += ["--region", region]
    raise typer.Exit(explain_main(argv))
