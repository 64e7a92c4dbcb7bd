"""Instance types: every one EC2 has, from a table (data/instance_types.csv, written by
scripts/instance_types.py from botocore's model), and DescribeInstanceTypes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from stockade.errors import ApiError
from stockade.service.common import Ctx, FilterSpec, Params, Result, action
from stockade.service.describe import Describe

DATA = Path(__file__).parent / "data" / "instance_types.csv"


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_mib: int
    architecture: str
    current_generation: bool
    bare_metal: bool
    burstable: bool
    free_tier: bool


def _load() -> dict[str, InstanceType]:
    with DATA.open(newline="") as f:
        return {
            r["instance_type"]: InstanceType(
                r["instance_type"],
                int(r["vcpus"]),
                int(r["memory_mib"]),
                r["architecture"],
                r["current_generation"] == "true",
                r["bare_metal"] == "true",
                r["burstable"] == "true",
                r["free_tier"] == "true",
            )
            for r in csv.DictReader(f)
        }


TABLE: dict[str, InstanceType] = _load()


def type_result(t: InstanceType) -> Result:
    threads = 1 if t.vcpus == 1 or t.architecture.startswith("arm64") else 2
    return {
        "instance_type": t.name,
        "current_generation": t.current_generation,
        "free_tier_eligible": t.free_tier,
        "supported_usage_classes": ["on-demand", "spot"],
        "supported_root_device_types": ["ebs"],
        "supported_virtualization_types": ["hvm"],
        "bare_metal": t.bare_metal,
        "hypervisor": None if t.bare_metal else "nitro",
        "processor_info": {"supported_architectures": [t.architecture]},
        "v_cpu_info": {
            "default_v_cpus": t.vcpus,
            "default_cores": max(t.vcpus // threads, 1),
            "default_threads_per_core": threads,
        },
        "memory_info": {"size_in_mi_b": t.memory_mib},
        "instance_storage_supported": False,
        "ebs_info": {"ebs_optimized_support": "default", "encryption_support": "supported"},
        "network_info": {
            "network_performance": "Up to 5 Gigabit",
            "maximum_network_interfaces": 2 if t.vcpus <= 2 else 4,
            "ipv4_addresses_per_interface": 4 if t.vcpus <= 2 else 15,
            "ipv6_addresses_per_interface": 4 if t.vcpus <= 2 else 15,
            "ipv6_supported": True,
            "ena_support": "required",
        },
        "placement_group_info": {"supported_strategies": ["partition", "spread"]},
        "hibernation_supported": False,
        "burstable_performance_supported": t.burstable,
        "dedicated_hosts_supported": False,
        "auto_recovery_supported": True,
        "supported_boot_modes": ["legacy-bios", "uefi"],
    }


TYPE_FILTERS: FilterSpec = {
    "instance-type": lambda t: [t["instance_type"]],
    "current-generation": lambda t: [t["current_generation"]],
    "free-tier-eligible": lambda t: [t["free_tier_eligible"]],
    "bare-metal": lambda t: [t["bare_metal"]],
    "burstable-performance-supported": lambda t: [t["burstable_performance_supported"]],
    "hypervisor": lambda t: [t["hypervisor"]],
    "processor-info.supported-architecture": lambda t: t["processor_info"][
        "supported_architectures"
    ],
    "vcpu-info.default-vcpus": lambda t: [t["v_cpu_info"]["default_v_cpus"]],
    "vcpu-info.default-cores": lambda t: [t["v_cpu_info"]["default_cores"]],
    "vcpu-info.default-threads-per-core": lambda t: [t["v_cpu_info"]["default_threads_per_core"]],
    "memory-info.size-in-mib": lambda t: [t["memory_info"]["size_in_mi_b"]],
    "supported-usage-class": lambda t: t["supported_usage_classes"],
    "supported-root-device-type": lambda t: t["supported_root_device_types"],
    "supported-virtualization-type": lambda t: t["supported_virtualization_types"],
    "instance-storage-supported": lambda t: [t["instance_storage_supported"]],
    "network-info.ipv6-supported": lambda t: [t["network_info"]["ipv6_supported"]],
    "network-info.maximum-network-interfaces": lambda t: [
        t["network_info"]["maximum_network_interfaces"]
    ],
}


def _types(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[InstanceType]:
    names = list(dict.fromkeys(p.get("instance_types") or []))
    unknown = [n for n in names if n not in TABLE]
    if unknown:
        raise ApiError(
            "InvalidInstanceType",
            f"The following supplied instance types do not exist: [{', '.join(unknown)}]",
        )
    if names:
        return [TABLE[n] for n in names]
    wanted = pushed.get("instance-type")
    if wanted is not None:
        return [TABLE[n] for n in dict.fromkeys(wanted) if n in TABLE]
    return list(TABLE.values())


TYPES = Describe(
    "instance_types",
    TYPE_FILTERS,
    lambda ctx, types: [type_result(t) for t in types],
    pushed={"instance-type": None},  # type: ignore[dict-item]  (looked up in the table)
    sort="instance_type",
    max_range=(5, 100),
    source=_types,
)


@action("DescribeInstanceTypes", write=False)
def describe_instance_types(ctx: Ctx, p: Params) -> Result:
    return TYPES.run(ctx, p)
