"""What the analyses read: the policy's State plus the facts it does not carry (subnets,
VPCs, public addresses, instance ids and names, group descriptions and owners).

Pure values, built by whoever has the records: `analysis.fromapi` from EC2 Describe*
replies, the service layer from the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stockade.model import Interface, State


@dataclass(frozen=True)
class Inventory:
    """One account's view of one region.

    ``state`` holds the groups and the interfaces that carry traffic (of pending or running
    instances); ``idle_interfaces`` the interfaces that exist but carry none (of stopped
    instances, or unattached), which still count as using their groups.
    """

    state: State
    account_id: str = ""
    subnet_of: Mapping[str, str] = field(default_factory=dict)  # interface id -> subnet id
    vpc_of: Mapping[str, str] = field(default_factory=dict)  # interface id -> vpc id
    public_ip: Mapping[str, str] = field(default_factory=dict)  # interface id -> public IPv4
    names: Mapping[str, str] = field(default_factory=dict)  # instance id -> Name tag
    group_vpc: Mapping[str, str] = field(default_factory=dict)  # group id -> vpc id
    group_owner: Mapping[str, str] = field(default_factory=dict)  # group id -> account id
    # group ids named by rules with another account's UserId: not ours to check
    foreign_groups: frozenset[str] = frozenset()
    idle_interfaces: tuple[Interface, ...] = ()

    def instance_label(self, instance_id: str) -> str:
        name = self.names.get(instance_id)
        return f"{instance_id} ({name})" if name else instance_id

    def group_name(self, group_id: str) -> str:
        group = self.state.groups.get(group_id)
        return group.name if group is not None and group.name else group_id

    def in_vpc(self, vpc_id: str | None) -> Inventory:
        """The same inventory with only the interfaces of ``vpc_id`` (groups all kept)."""
        if not vpc_id:
            return self
        keep = {k: v for k, v in self.state.interfaces.items() if self.vpc_of.get(k) == vpc_id}
        return Inventory(
            State(self.state.groups, keep),
            self.account_id,
            self.subnet_of,
            self.vpc_of,
            self.public_ip,
            self.names,
            self.group_vpc,
            self.group_owner,
            self.foreign_groups,
            self.idle_interfaces,
        )


def bare(state: State) -> Inventory:
    """An inventory of a State alone (no subnets, no public addresses)."""
    return Inventory(state)
