"""One helper for the Describe actions: ids or a listing, filters, pages and tags.

Every Describe* handler was the same sequence written out again: check the filters, check
MaxResults (and that it is not given with ids), read the rows of the ids asked for or of the
caller's region (with exact filter values pushed into SQL), describe them, keep those that
pass the filters and cut a page. A :class:`Describe` says what differs (table, id prefix and
parameter, filter spec, pushed-down columns, sort key, result builder) and :meth:`run` does
the sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Row, Table, select

from stockade.errors import ApiError
from stockade.service import resources
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    check_id,
    check_max_results,
    decode_token,
    encode_token,
    matches,
    paginate,
    parse_filters,
)

Parsed = list[tuple[str, list]]
Builder = Callable[[Ctx, list[Any]], list[Result]]
# rows of the caller's region for a listing: (ctx, request, pushed exact values by filter
# name) -> rows; with a scan, also (after, limit) for a keyset page in id order
Source = Callable[[Ctx, Params, dict[str, list[str]]], list[Any]]
Scan = Callable[[Ctx, Params, dict[str, list[str]], str | None, int], list[Any]]


def pushed_values(filters: Parsed, names: Sequence[str]) -> dict[str, list[str]]:
    """The exact values (no wildcard) of each filter in ``names``, for SQL ``IN`` (of its
    first occurrence: the rows are filtered again in full after)."""
    out: dict[str, list[str]] = {}
    for name, patterns in filters:
        if name not in names or name in out:
            continue
        texts = [getattr(p, "text", None) for p in patterns]
        if all(isinstance(t, str) for t in texts):
            out[name] = [t for t in texts if t is not None]
    return out


@dataclass(frozen=True)
class Describe:
    """What one Describe action lists and how."""

    result: str  # the result's list key ("vpcs")
    filters: FilterSpec
    build: Builder  # rows -> results (each builder reads the tags it shows)
    table: Table | None = None  # rows of the caller's region, unless ``source`` is given
    prefix: str | None = None  # id prefix of the resources (resources.KINDS) the ids name
    ids: str | None = None  # request key of the ids asked for ("vpc_ids")
    ids_wire: str | None = None  # its wire name when it cannot go with MaxResults
    pushed: Mapping[str, Column] = field(default_factory=dict)  # filter -> column
    sort: str | None = None  # result key pages are sorted by; None: no MaxResults
    max_range: tuple[int, int] = (5, 1000)
    source: Source | None = None  # the rows when not the plain table (and the ids asked
    # for too when there is no ``prefix`` to look them up by)
    scan: Scan | None = None  # keyset pages in id order (only rows a page needs)
    id_filters: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # filter name -> (id prefix, malformed error code): exact values are checked as ids
    finish: Callable[[list[Result]], Any] | None = None  # the page as the wire wants it

    # --- the steps ------------------------------------------------------------------------

    def parse(self, p: Params) -> tuple[Parsed, int | None]:
        filters = parse_filters(p.get("filters"), self.filters)
        for name, patterns in filters:
            check = self.id_filters.get(name)
            if check is None:
                continue
            for pattern in patterns:
                text = getattr(pattern, "text", None)
                if text is not None:
                    check_id(text, check[0], check[1])
        max_results = None
        if self.sort is not None:
            max_results = check_max_results(p.get("max_results"), *self.max_range)
            if self.ids_wire and p.get(self.ids or "") and max_results is not None:
                raise ApiError(
                    "InvalidParameterCombination",
                    f"The parameter {self.ids_wire} cannot be used with the parameter maxResults",
                )
        return filters, max_results

    def rows(self, ctx: Ctx, p: Params, filters: Parsed) -> list[Any]:
        """The rows of the ids asked for, else of the caller's region (narrowed in SQL)."""

        if self.ids and p.get(self.ids) and self.prefix is not None:
            return resources.get_many(ctx, p[self.ids], self.prefix)
        pushed = pushed_values(filters, list(self.pushed))
        if self.source is not None:
            return self.source(ctx, p, pushed)
        assert self.table is not None
        c = self.table.c
        q = select(self.table).where(c.account_id == ctx.account_id, c.region == ctx.region)
        for name, values in pushed.items():
            q = q.where(self.pushed[name].in_(values))
        return list(ctx.conn.execute(q))

    def described(self, ctx: Ctx, rows: list[Any], filters: Parsed) -> list[Result]:
        items = self.build(ctx, rows)
        if filters:
            items = [it for it in items if matches(it, filters, self.filters)]
        return items

    def page(
        self, items: list[Result], max_results: int | None, token: str | None
    ) -> tuple[list[Result], str | None]:
        if self.sort is None:
            return items, None
        return paginate(items, self.sort, max_results, token)

    def out(self, page: list[Result], token: str | None) -> Result:
        shaped = self.finish(page) if self.finish is not None else page
        result: Result = {self.result: shaped}
        if self.sort is not None:
            result["next_token"] = token
        return result

    # --- the whole sequence ---------------------------------------------------------------

    def run(self, ctx: Ctx, p: Params, rows: list[Any] | None = None) -> Result:
        """The action: ``rows`` if the caller read them already, else :meth:`rows`."""
        filters, max_results = self.parse(p)
        token = p.get("next_token")
        asked = bool(self.ids and p.get(self.ids))
        if rows is None and self.scan is not None and max_results is not None and not asked:
            return self._scanned(ctx, p, filters, max_results, token)
        if rows is None:
            rows = self.rows(ctx, p, filters)
        page, next_token = self.page(self.described(ctx, rows, filters), max_results, token)
        return self.out(page, next_token)

    # rows described at a time while looking for a page's worth that pass the filters
    SCAN_CHUNK = 200

    def _scanned(
        self, ctx: Ctx, p: Params, filters: Parsed, max_results: int, token: str | None
    ) -> Result:
        """A page read in id order from where the token left off, rows described only until
        the page (and one more, to know whether there is a next one) is full."""
        assert self.scan is not None and self.sort is not None
        after = decode_token(token, self.sort)
        chunk = max_results + 1 if not filters else max(max_results + 1, self.SCAN_CHUNK)
        pushed = pushed_values(filters, list(self.pushed))
        items: list[Result] = []
        while True:
            rows = self.scan(ctx, p, pushed, after, chunk)
            items += self.described(ctx, rows, filters)
            if len(items) > max_results or len(rows) < chunk:
                break
            after = rows[-1].id
        items.sort(key=lambda it: it[self.sort])  # type: ignore[index]
        if len(items) <= max_results:
            return self.out(items, None)
        page = items[:max_results]
        return self.out(page, encode_token(page[-1][self.sort], self.sort))


def tagged(result: Callable[[Ctx, Row, list | None], Result]) -> Builder:
    """A builder from a one-row result function that takes the row's tags."""

    def build(ctx: Ctx, rows: list[Any]) -> list[Result]:
        tags = resources.tags_for(ctx, [r.id for r in rows])
        return [result(ctx, r, tags.get(r.id)) for r in rows]

    return build
