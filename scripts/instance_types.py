"""Write src/stockade/service/data/instance_types.csv: every instance type botocore's EC2
model knows, with its vCPUs, memory and architecture.

The burstable families and the common sizes follow EC2's published figures; the rest follow
EC2's naming rules (a size's vCPUs: medium 1, large 2, xlarge 4, Nxlarge 4N; memory per vCPU
by family: c 2 GiB, m 4 GiB, r 8 GiB, x 16 GiB, ...), so a family's sizes keep EC2's ratios.
Run again after a botocore upgrade: python scripts/instance_types.py
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import botocore.session

OUT = Path(__file__).parent.parent / "src/stockade/service/data/instance_types.csv"
PREVIOUS = {
    "t1",
    "m1",
    "m2",
    "m3",
    "c1",
    "c3",
    "c4",
    "r3",
    "r4",
    "i2",
    "g2",
    "g3",
    "g3s",
    "cr1",
    "hs1",
    "cc2",
    "d2",
    "m4",
    "p2",
    "x1",
    "x1e",
    "f1",
    "h1",
    "a1",
}
MIB_PER_VCPU = {
    "c": 2048,
    "m": 4096,
    "r": 8192,
    "x": 16384,
    "z": 8192,
    "i": 8192,
    "d": 8192,
    "h": 4096,
    "g": 4096,
    "p": 8192,
    "f": 15616,
    "u": 28672,
    "vt": 2048,
    "inf": 2048,
    "trn": 16384,
    "dl": 8192,
    "hpc": 4096,
    "im": 8192,
    "is": 8192,
    "mac": 4096,
    "a": 2048,
}
# burstable: (vCPUs, MiB) by size
BURSTABLE = {
    "nano": (2, 512),
    "micro": (2, 1024),
    "small": (2, 2048),
    "medium": (2, 4096),
    "large": (2, 8192),
    "xlarge": (4, 16384),
    "2xlarge": (8, 32768),
}
T2 = {
    "nano": (1, 512),
    "micro": (1, 1024),
    "small": (1, 2048),
    "medium": (2, 4096),
    "large": (2, 8192),
    "xlarge": (4, 16384),
    "2xlarge": (8, 32768),
}
T1 = {"micro": (1, 627)}
SIZE = re.compile(r"(\d*)xlarge")


def vcpus_of(size: str, largest: int) -> int:
    if size == "metal" or size.startswith("metal-"):
        return largest
    if size in ("nano", "micro", "small", "medium"):
        return 1
    if size == "large":
        return 2
    m = SIZE.fullmatch(size)
    if m:
        return 4 * int(m.group(1) or 1)
    return 2


def main() -> None:
    enum = botocore.session.get_session().get_service_model("ec2").shape_for("InstanceType").enum
    by_family: dict[str, list[str]] = {}
    for name in enum:
        family, _, size = name.partition(".")
        by_family.setdefault(family, []).append(size)
    rows = []
    for name in sorted(enum):
        family, _, size = name.partition(".")
        prefix = re.match(r"[a-z]+", family).group(0)  # type: ignore[union-attr]
        sizes = [s for s in by_family[family] if not s.startswith("metal")]
        largest = max((vcpus_of(s, 0) for s in sizes), default=96) or 96
        burst = family == "t2" and T2 or family == "t1" and T1
        if family.startswith("t"):
            burst = burst or BURSTABLE
        if burst and size in burst:
            vcpus, mib = burst[size]
        else:
            vcpus = vcpus_of(size, largest)
            key = next(
                (k for k in sorted(MIB_PER_VCPU, key=len, reverse=True) if prefix.startswith(k)),
                "m",
            )
            mib = vcpus * MIB_PER_VCPU[key]
        arch = "x86_64"
        if (
            family == "a1"
            or re.fullmatch(r"[a-z]+\d+[a-z]*g[a-z]*", family)
            and "mac" not in family
        ):
            arch = "arm64"
        if family.startswith("mac"):
            arch = "arm64_mac" if family != "mac1" else "x86_64_mac"
        rows.append(
            {
                "instance_type": name,
                "vcpus": vcpus,
                "memory_mib": mib,
                "architecture": arch,
                "current_generation": "false" if family in PREVIOUS else "true",
                "bare_metal": "true" if size.startswith("metal") else "false",
                "burstable": "true" if family.startswith("t") else "false",
                "free_tier": "true" if name in ("t2.micro", "t3.micro") else "false",
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} instance types written to {OUT}")


if __name__ == "__main__":
    main()
