"""The EC2 actions the API serves, in one explicit list of service modules.

A new service module is added to :data:`SERVICE_MODULES` (by name); its handlers are those
marked with ``@action(...)`` (service/common.py). Nothing is registered by importing a module: the
table :data:`ACTIONS` is built here, from this list, once.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stockade.service.common import ACTIONS, Action, actions_of

SERVICE_MODULES = (
    "addresses",
    "groups",
    "images",
    "insights",
    "instance_options",
    "instance_types",
    "instances",
    "interfaces",
    "ipv6",
    "keypairs",
    "meta",
    "prefixlists",
    "vpcs",
)
SERVICES: tuple[ModuleType, ...] = tuple(
    importlib.import_module(f"stockade.service.{name}") for name in SERVICE_MODULES
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
