"""The action table is built from one explicit list of service modules (api/actions.py)."""

from __future__ import annotations

import importlib
import pkgutil

import stockade.service
from stockade.api import actions
from stockade.service.common import ACTIONS, actions_of


def test_every_marked_handler_is_served_and_nothing_else() -> None:
    marked = {}
    for info in pkgutil.iter_modules(stockade.service.__path__):
        module = importlib.import_module(f"stockade.service.{info.name}")
        marked.update({a.name: a for a in actions_of(module)})
    assert set(marked) == set(ACTIONS) == set(actions.build())
    assert {m.__name__ for m in actions.SERVICES} >= {
        a.handler.__module__ for a in ACTIONS.values()
    }


def test_a_module_left_out_serves_none_of_its_actions() -> None:
    from stockade.service import groups

    table = actions.build(tuple(m for m in actions.SERVICES if m is not groups))
    assert "CreateSecurityGroup" in ACTIONS and "CreateSecurityGroup" not in table
    assert "DescribeInstances" in table
