"""Pictures of reach and blast: Graphviz DOT text written here, rendered to SVG or PNG by
the `dot` program (Debian's graphviz package).

Reach: one node per class (its groups, subnet and instances), an "internet" node for
outside addresses, an edge per allowed class pair labelled with the ports. Blast: the
instances the start reaches, ranked by hop count, edges along the shortest paths.
"""

from __future__ import annotations

import shutil
import subprocess

from stockade.analysis.blast import Blast
from stockade.analysis.reach import Klass, Reach

INTERNET = "internet"


class PictureError(RuntimeError):
    """The picture cannot be rendered (no `dot`, or it failed)."""


def _q(text: str) -> str:
    """A DOT string literal; newlines in ``text`` become line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _members(reach: Reach, klass: Klass, limit: int = 4) -> str:
    ids = [reach.inventory.instance_label(i) for i in klass.instance_ids]
    shown = ids[:limit]
    if len(ids) > limit:
        shown.append(f"(+{len(ids) - limit} more)")
    return "\n".join(shown)


def class_label(reach: Reach, klass: Klass) -> str:
    inv = reach.inventory
    groups = ", ".join(inv.group_name(g) for g in klass.group_ids) or "(no groups)"
    head = f"{groups}"
    if klass.public:
        head += " [public]"
    return head


def reach_dot(reach: Reach, title: str = "who can reach whom") -> str:
    lines = [
        "digraph reach {",
        f"  label={_q(title)}; labelloc=t; rankdir=TB; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef4fb", fontname=Helvetica];',
        "  edge [fontname=Helvetica, fontsize=10];",
    ]
    used_internet = False
    for k in reach.classes:
        text = class_label(reach, k) + "\n" + _members(reach, k)
        if k.subnet:
            text += f"\n{k.subnet}"
        lines.append(f"  c{k.index} [label={_q(text)}];")
    for k in reach.classes:
        if not k.public:
            continue
        for o in reach.from_outside(k):
            if o.ports:
                used_internet = True
                label = o.ports.describe() + ("" if o.cidr.prefixlen == 0 else f"\nfrom {o.cidr}")
                lines.append(f"  {INTERNET} -> c{k.index} [label={_q(label)}, color=red];")
    for a, b, ports in sorted(reach.edges(), key=lambda e: (e[0].index, e[1].index)):
        lines.append(f"  c{a.index} -> c{b.index} [label={_q(ports.describe())}];")
    if used_internet:
        lines.insert(4, f'  {INTERNET} [label="internet", shape=ellipse, fillcolor="#fde2e2"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def blast_dot(reach: Reach, result: Blast) -> str:
    inv = reach.inventory
    lines = [
        "digraph blast {",
        f"  label={_q(f'blast radius of {inv.instance_label(result.start)}')}; labelloc=t;",
        "  rankdir=TB; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef4fb", fontname=Helvetica];',
        "  edge [fontname=Helvetica, fontsize=10];",
        f"  n0 [label={_q(inv.instance_label(result.start) + chr(10) + 'start')}, "
        'fillcolor="#fde2e2"];',
    ]
    node = {result.start: "n0"}
    for n, hop in enumerate(result.reached, 1):
        node[hop.instance_id] = f"n{n}"
        text = f"{inv.instance_label(hop.instance_id)}\nhop {hop.hops}"
        lines.append(f"  n{n} [label={_q(text)}];")
    for hop in result.reached:
        prev = hop.path[-2]
        label = f"{hop.ports.describe()}"
        lines.append(f"  {node[prev]} -> {node[hop.instance_id]} [label={_q(label)}];")
    if result.outside:
        lines.append('  out [label="internet", shape=ellipse, fillcolor="#fde2e2"];')
        for o in result.outside:
            if o.ports:
                lines.append(
                    f"  n0 -> out [label={_q(o.ports.describe() + ' to ' + str(o.cidr))}];"
                )
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot: str, fmt: str) -> bytes:
    """The picture as ``fmt`` (svg or png) bytes, rendered by Graphviz's `dot`."""
    exe = shutil.which("dot")
    if exe is None:
        raise PictureError(
            "Graphviz's `dot` is not installed: install graphviz "
            "(sudo apt-get install graphviz, or brew install graphviz), "
            "or ask for --format dot and render it elsewhere"
        )
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise PictureError(f"dot failed: {proc.stderr.decode(errors='replace')[:300]}")
    return proc.stdout
