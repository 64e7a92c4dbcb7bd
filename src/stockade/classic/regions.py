"""ec2-describe-regions."""

from __future__ import annotations

import argparse
from typing import Any

from stockade.classic.core import Command, Context, add_filter_option, api_filters


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("regions", nargs="*", metavar="REGION", help="region names (default: all)")
    add_filter_option(p)


def _describe(ctx: Context, a: argparse.Namespace) -> None:
    params: dict[str, Any] = {}
    if a.regions:
        params["RegionNames"] = a.regions
    if a.filters:
        params["Filters"] = api_filters(a.filters)
    for region in ctx.call("DescribeRegions", **params)["Regions"]:
        # The old tools' `REGION<TAB>eu-west-1<TAB>ec2.eu-west-1.amazonaws.com`.
        ctx.out.record("REGION", region.get("RegionName"), region.get("Endpoint"))


DESCRIBE_REGIONS = Command(
    name="ec2-describe-regions",
    aliases=("ec2dre",),
    summary="Describe the regions and their endpoints.",
    arguments=_arguments,
    run=_describe,
    layouts={"REGION": ("Region", "Endpoint")},
)
