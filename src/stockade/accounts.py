"""Accounts and their access keys (administered by the `stockade account` CLI, not the API)."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from stockade import config
from stockade.store import schema
from stockade.store.db import Store, utcnow

DEFAULT_ACCOUNT = config.DEFAULT_ACCOUNT
_KEY_ALPHABET = string.ascii_uppercase + "234567"
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


class AccountError(Exception):
    """A mistake in an account command (unknown name, duplicate name)."""


@dataclass(frozen=True)
class Account:
    name: str
    account_id: str
    access_key_id: str
    secret_access_key: str

    def as_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "account_id": self.account_id,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }


def _new_account_id(store: Store) -> str:
    while True:
        candidate = str(secrets.randbelow(9 * 10**11) + 10**11)
        with store.read() as conn:
            if (
                conn.execute(
                    select(schema.accounts.c.id).where(schema.accounts.c.id == candidate)
                ).first()
                is None
            ):
                return candidate


def create(store: Store, name: str) -> Account:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise AccountError(
            f"invalid account name {name!r}: use 1-64 letters, digits, '-', '_' or '.'"
        )
    account_id = _new_account_id(store)
    key = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    with store.write() as tx:
        taken = tx.conn.execute(
            select(schema.accounts.c.id).where(schema.accounts.c.name == name)
        ).first()
        if taken is not None:
            raise AccountError(f"an account named {name!r} already exists")
        tx.conn.execute(
            insert(schema.accounts).values(id=account_id, name=name, created_at=utcnow())
        )
        tx.conn.execute(
            insert(schema.access_keys).values(
                access_key_id=key,
                account_id=account_id,
                secret_access_key=secret,
                created_at=utcnow(),
            )
        )
    return Account(name, account_id, key, secret)


def list_all(store: Store) -> list[Account]:
    a, k = schema.accounts.c, schema.access_keys.c
    with store.read() as conn:
        rows = conn.execute(
            select(a.name, a.id, k.access_key_id, k.secret_access_key)
            .join(schema.access_keys, k.account_id == a.id)
            .order_by(a.created_at, a.name)
        )
        return [Account(*row) for row in rows]


def get(store: Store, name: str) -> Account:
    for account in list_all(store):
        if account.name == name:
            return account
    raise AccountError(f"no account named {name!r} (see `stockade account list`)")


def ensure_default(store: Store) -> Account:
    try:
        return get(store, DEFAULT_ACCOUNT)
    except AccountError:
        return create(store, DEFAULT_ACCOUNT)


# The stored secret of a key adopted by ``serve --accept-any-credentials``: any secret signs
# for it while the server runs with that flag; without it the key is refused (no real secret
# can be empty).
ANY_SECRET = ""
_ADOPTABLE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def adopt_key(store: Store, access_key_id: str) -> tuple[str, str] | None:
    """An account of its own for an unknown access key (``--accept-any-credentials``):
    named ``key-<access key>``, with a 12-digit key as its id if free (LocalStack's
    convention), a random id otherwise. (account id, :data:`ANY_SECRET`), or None for a key
    that cannot be one (over 32 characters, or characters other than letters, digits and
    ``-_.``)."""
    if not _ADOPTABLE.fullmatch(access_key_id):
        return None
    a, k = schema.accounts.c, schema.access_keys.c
    wanted = access_key_id if access_key_id.isdigit() and len(access_key_id) == 12 else None
    account_id = _new_account_id(store)
    with store.write() as tx:
        conn = tx.conn
        row = conn.execute(
            select(k.account_id, k.secret_access_key).where(k.access_key_id == access_key_id)
        ).first()
        if row is not None:  # another request adopted it first
            return row.account_id, row.secret_access_key
        if wanted and conn.execute(select(a.id).where(a.id == wanted)).first() is None:
            account_id = wanted
        name = f"key-{access_key_id}"
        if conn.execute(select(a.id).where(a.name == name)).first() is not None:
            name = f"key-{account_id}-{access_key_id}"
        conn.execute(insert(schema.accounts).values(id=account_id, name=name, created_at=utcnow()))
        conn.execute(
            insert(schema.access_keys).values(
                access_key_id=access_key_id,
                account_id=account_id,
                secret_access_key=ANY_SECRET,
                created_at=utcnow(),
            )
        )
    return account_id, ANY_SECRET


def secret_for(store: Store, access_key_id: str) -> tuple[str, str] | None:
    """(account id, secret) of an access key, or None."""
    k = schema.access_keys.c
    with store.read() as conn:
        row = conn.execute(
            select(k.account_id, k.secret_access_key).where(k.access_key_id == access_key_id)
        ).first()
    return (row.account_id, row.secret_access_key) if row else None


def delete_account(store: Store, name: str) -> Account:
    """Delete an account and everything it owns; rules elsewhere naming its groups go too."""
    from stockade.service.reset import purge

    account = get(store, name)
    with store.write() as tx:
        purge(tx, account.account_id)
        tx.conn.execute(
            delete(schema.access_keys).where(schema.access_keys.c.account_id == account.account_id)
        )
        tx.conn.execute(delete(schema.accounts).where(schema.accounts.c.id == account.account_id))
    return account
