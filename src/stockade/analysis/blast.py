"""`stockade blast`: what an attacker holding one instance reaches, directly and through
the instances it reaches in turn (seed 004's compromised gateway), with ports and hops.

A breadth-first walk over the reach classes: every member of a class answers alike, so a
hop from a class reaches the whole of each class it has ports to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stockade.analysis.ports import Ports, union
from stockade.analysis.reach import Klass, Outside, Reach


class BlastError(ValueError):
    """The starting instance is not in the analysed state."""


@dataclass(frozen=True)
class Hop:
    instance_id: str
    hops: int
    ports: Ports  # what the instances one hop nearer may open to it
    path: tuple[str, ...]  # start, ..., this instance (one shortest path)

    def to_json(self, label: Any = str) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "label": label(self.instance_id),
            "hops": self.hops,
            "ports": self.ports.describe(),
            "allowed": self.ports.to_json(),
            "path": list(self.path),
        }


@dataclass(frozen=True)
class Blast:
    start: str
    reached: tuple[Hop, ...]
    outside: tuple[Outside, ...]  # what the start may open to outside addresses
    max_hops: int


def blast(reach: Reach, start: str, max_hops: int = 3) -> Blast:
    """Who ``start`` (an instance id) reaches within ``max_hops`` hops."""
    classes_of: dict[str, set[int]] = {}
    for k in reach.classes:
        for m in k.members:
            classes_of.setdefault(m.instance_id, set()).add(k.index)
    if start not in classes_of:
        raise BlastError(
            f"instance {start} is not running (or has no IPv{reach.version} address) in "
            "this account and region; list them with `aws ec2 describe-instances`"
        )
    found: dict[str, Hop] = {}
    seen = {start}
    frontier = {start: (start,)}
    for hop in range(1, max_hops + 1):
        # the frontier's classes, each with one instance on a shortest path
        sources: dict[int, str] = {}
        for inst in sorted(frontier):
            for k in classes_of[inst]:
                sources.setdefault(k, inst)
        offers: dict[str, list[Ports]] = {}
        via: dict[str, str] = {}
        for k, inst in sources.items():
            src = reach.classes[k]
            for dst in reach.classes:
                ports = reach.class_between(src, dst)
                if not ports:
                    continue
                for m in dst.members:
                    if m.instance_id in seen:
                        continue
                    offers.setdefault(m.instance_id, []).append(ports)
                    via.setdefault(m.instance_id, inst)
        if not offers:
            break
        frontier = {}
        for inst, got in offers.items():
            path = (*_path(found, start, via[inst]), inst)
            found[inst] = Hop(inst, hop, union(got), path)
            frontier[inst] = path
            seen.add(inst)
    outside: list[Outside] = []
    for k in sorted(classes_of[start]):
        klass: Klass = reach.classes[k]
        if klass.public:
            outside.extend(reach.to_outside(klass))
    reached = tuple(sorted(found.values(), key=lambda h: (h.hops, h.instance_id)))
    return Blast(start, reached, tuple(outside), max_hops)


def _path(found: dict[str, Hop], start: str, inst: str) -> tuple[str, ...]:
    return (start,) if inst == start else found[inst].path
