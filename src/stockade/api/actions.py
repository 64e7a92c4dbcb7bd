"""The EC2 actions the API serves, in one explicit list of service modules.

A new service module is added to :data:`SERVICES`; its handlers are those marked with
``@action(...)`` (service/common.py). Nothing is registered by importing a module: the
table :data:`ACTIONS` is built here, from this list, once.
"""

from __future__ import annotations

from types import ModuleType

from stockade.service import (
    addresses,
    groups,
    images,
    insights,
    instance_options,
    instance_types,
    instances,
    interfaces,
    ipv6,
    keypairs,
    meta,
    prefixlists,
    vpcs,
)
from stockade.service.common import ACTIONS, Action, actions_of

SERVICES: tuple[ModuleType, ...] = (
    addresses,
    groups,
    images,
    insights,
    instance_options,
    instance_types,
    instances,
    interfaces,
    ipv6,
    keypairs,
    meta,
    prefixlists,
    vpcs,
)


def build(services: tuple[ModuleType, ...] = SERVICES) -> dict[str, Action]:
    """The action table of ``services``; an action defined twice is an error."""
    table: dict[str, Action] = {}
    for module in services:
        for spec in actions_of(module):
            if spec.name in table and table[spec.name].handler is not spec.handler:
                raise RuntimeError(f"{spec.name} is defined twice ({module.__name__})")
            table[spec.name] = spec
    return table


ACTIONS.clear()
ACTIONS.update(build())

__all__ = ["ACTIONS", "SERVICES", "build"]
