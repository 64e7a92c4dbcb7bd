"""Empty accounts for test suites (moto's ``POST /moto-api/reset`` is the anchor).

:func:`reset` deletes every resource of the accounts it is given (all of them by default):
instances and their reservations, network interfaces, Elastic IPs, key pairs, security
groups and their rules, subnets, VPCs and tags. It keeps the accounts and their access keys,
and gives each region the account had used its defaults again, as on a fresh start (a
default VPC with one subnet per zone and its ``default`` group).

It is one write transaction, logged as the services log their deletes (``group.rules`` for
other accounts' rules that named a deleted group, ``interface.deleted``, ``group.deleted``)
and then the new defaults' ``vpc.created``/``subnet.created``/``group.created``: agents and
sandbox hosts follow it like any other change (a host tears down the instances that are no
longer placed on it; an agent drops the interfaces and groups that are gone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Table, delete, func, select

from stockade.service.common import Config, Ctx
from stockade.store import schema
from stockade.store.db import Store, Tx

# What a reset deletes, children before parents (foreign keys), as (table, label).
OWNED: tuple[tuple[Table, str], ...] = (
    (schema.tags, "tags"),
    (schema.attributes, "attributes"),
    (schema.subnet_cidr_reservations, "subnet CIDR reservations"),
    (schema.addresses, "Elastic IPs"),
    (schema.network_interfaces, "network interfaces"),
    (schema.instances, "instances"),
    (schema.reservations, "reservations"),
    (schema.key_pairs, "key pairs"),
    (schema.rules, "security group rules"),
    (schema.security_groups, "security groups"),
    (schema.managed_prefix_lists, "managed prefix lists"),
    (schema.cidr_blocks, "CIDR blocks"),
    (schema.subnets, "subnets"),
    (schema.vpcs, "VPCs"),
)


@dataclass
class AccountReset:
    """What a reset found (and, unless it was a dry run, deleted) in one account."""

    account_id: str
    name: str
    regions: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """``3 instances, 5 security groups, ...`` (only what there is), or ``nothing``."""
        parts = [f"{n} {label}" for label, n in self.counts.items() if n]
        return ", ".join(parts) or "nothing"

    def as_json(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "name": self.name,
            "regions": self.regions,
            "deleted": self.counts,
        }


def _accounts(conn: Connection, account_ids: Iterable[str] | None) -> list[tuple[str, str]]:
    a = schema.accounts.c
    query = select(a.id, a.name).order_by(a.created_at, a.name)
    if account_ids is not None:
        query = query.where(a.id.in_(list(account_ids)))
    return [(row.id, row.name) for row in conn.execute(query)]


def _inventory(conn: Connection, account_id: str, name: str) -> AccountReset:
    rt = schema.regions.c
    regions = list(
        conn.execute(
            select(rt.region).where(rt.account_id == account_id).order_by(rt.region)
        ).scalars()
    )
    found = AccountReset(account_id, name, regions)
    for table, label in OWNED:
        n = conn.execute(
            select(func.count()).select_from(table).where(table.c.account_id == account_id)
        ).scalar_one()
        found.counts[label] = n
    return found


def inventory(store: Store, account_ids: Iterable[str] | None = None) -> list[AccountReset]:
    """What :func:`reset` would delete, per account (nothing is changed)."""
    with store.read() as conn:
        return [_inventory(conn, aid, name) for aid, name in _accounts(conn, account_ids)]


def purge(tx: Tx, account_id: str) -> None:
    """Delete everything ``account_id`` owns in ``tx`` (its account row and keys stay), and
    log it; rules of other accounts that name its groups go too."""
    conn = tx.conn
    r, g, ni = schema.rules.c, schema.security_groups.c, schema.network_interfaces.c
    own_groups = select(g.id).where(g.account_id == account_id)
    foreign = conn.execute(
        select(r.group_id, r.account_id, r.region)
        .where(r.ref_group_id.in_(own_groups), r.account_id != account_id)
        .distinct()
    ).all()
    conn.execute(
        delete(schema.rules).where(r.ref_group_id.in_(own_groups), r.account_id != account_id)
    )
    for rule in foreign:
        tx.log(rule.account_id, rule.region, "group.rules", rule.group_id)
    enis = conn.execute(
        select(ni.id, ni.region, ni.instance_id, ni.private_ip, ni.public_ip).where(
            ni.account_id == account_id
        )
    ).all()
    groups = conn.execute(select(g.id, g.region, g.vpc_id).where(g.account_id == account_id)).all()
    for table, _ in OWNED:
        conn.execute(delete(table).where(table.c.account_id == account_id))
    conn.execute(delete(schema.regions).where(schema.regions.c.account_id == account_id))
    for eni in enis:
        tx.log(
            account_id,
            eni.region,
            "interface.deleted",
            eni.id,
            instance_id=eni.instance_id,
            private_ip=eni.private_ip,
            public_ip=eni.public_ip,
        )
    for group in groups:
        tx.log(account_id, group.region, "group.deleted", group.id, vpc_id=group.vpc_id)


def reset(
    store: Store, account_ids: Iterable[str] | None = None, config: Config | None = None
) -> tuple[list[AccountReset], Tx]:
    """Empty the accounts (all of them when ``account_ids`` is None) in one transaction and
    recreate their regions' defaults; what each held, and the committed transaction."""
    from stockade.service.vpcs import ensure_region

    config = config or Config()
    with store.write() as tx:
        done = []
        for aid, name in _accounts(tx.conn, account_ids):
            found = _inventory(tx.conn, aid, name)
            purge(tx, aid)
            for region in found.regions:
                ensure_region(Ctx(tx.conn, aid, region, config, tx))
            done.append(found)
    return done, tx
