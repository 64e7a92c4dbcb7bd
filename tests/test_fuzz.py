"""A bounded signed fuzzer against a real ``stockade serve``, on SQLite and PostgreSQL.

Every action Stockade implements gets valid-ish requests (naming resources the run made)
and mutated ones (see ``tests/fuzzing.py``), SigV4-signed with a real account's keys. The
test fails on any 5xx, any request slower than the per-request timeout, any reply that is
not EC2's XML, and any stored change made by a rejected request or a read.

``STOCKADE_FUZZ_ROUNDS`` (default 15: about 2,700 requests) and ``STOCKADE_FUZZ_SEED``
change the run; a failure names the seed and the request to replay it. PostgreSQL gets a
third of the rounds: the stored-state digest after every request is a round trip per table
there, and what PostgreSQL adds (types, lengths, encodings) shows in the first rounds;
``bench/fuzz.py`` runs the long sweeps on both.
"""

from __future__ import annotations

import os
import random

from stockade.api import codec
from stockade.errors import ApiError
from stockade.service.common import ACTIONS

from conftest import Server
from fuzzing import MUTATIONS, Fuzzer, Generator, Pools, Target, actions

ROUNDS = int(os.environ.get("STOCKADE_FUZZ_ROUNDS", "15"))
SEED = os.environ.get("STOCKADE_FUZZ_SEED", "20261203")
MUTATED_PER_VALID = 3


def database(server: Server) -> str:
    return "postgres" if server.db_url.startswith("postgresql") else "sqlite"


def rounds(database: str) -> int:
    return ROUNDS if database == "sqlite" else max(1, ROUNDS // 3)


def test_fuzz_signed_requests(server: Server) -> None:
    acct, peer = server.account(), server.account()
    target = Target(
        server.url,
        server.store,
        acct.account_id,
        acct.access_key_id,
        acct.secret_access_key,
        database(server),
    )
    try:
        fuzzer = Fuzzer(target, SEED, mutated_per_valid=MUTATED_PER_VALID)
        fuzzer.setup(peer.account_id)
        stats = fuzzer.run(fuzzer.cases(rounds(target.database)))
    finally:
        target.close()
    shown = "\n".join(str(f) for f in stats.findings[:15])
    stopped = " (stopped: the server no longer answered)" if stats.stopped else ""
    assert not stats.findings, (
        f"seed {SEED}, {target.database}: {len(stats.findings)} findings "
        f"({stats.server_errors} 5xx, {stats.hangs} hangs, {stats.stored_changes} stored "
        f"changes, {stats.malformed} malformed replies) in {stats.requests} requests"
        f"{stopped}:\n{shown}"
    )
    n = rounds(target.database)
    assert stats.requests == n * len(ACTIONS) * (1 + MUTATED_PER_VALID)
    assert set(stats.by_action) == set(ACTIONS)
    # valid-ish requests get past validation often enough to reach the handlers' depths
    assert stats.accepted >= n * len(ACTIONS) // 4, stats.codes.most_common(10)


def test_valid_ish_requests_decode() -> None:
    """The generator's valid-ish requests are what the model accepts, for every action."""
    gen = Generator(random.Random(7), Pools("111111111111", "222222222222"), "sqlite")
    assert actions() == sorted(ACTIONS)
    for action in actions():
        decoded = 0
        for _ in range(20):
            case = gen.valid(action)
            params = {p.key: p.value for p in case.params}
            assert len(params) == len(case.params), case.describe()
            try:
                codec.decode_request(action, dict(params))
            except ApiError as err:
                raise AssertionError(f"{case.describe()}: {err.code} {err.message}") from None
            decoded += 1
        assert decoded == 20


def test_every_mutation_is_drawn() -> None:
    gen = Generator(random.Random(11), Pools("111111111111", "222222222222"), "sqlite")
    seen = set()
    for action in actions():
        for _ in range(60):
            case = gen.mutated(action)
            assert case.mutation is not None
            seen.add(case.mutation[1])
            assert case.mutation not in gen.exclude
            assert not set(case.also) & gen.exclude
    # every kind of mutation is drawn somewhere
    assert seen >= set(MUTATIONS), set(MUTATIONS) - seen
