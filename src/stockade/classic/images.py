"""ec2-describe-images.

The IMAGE line of the later ec2-api-tools, as euca2ools' compatible euca-describe-images
also prints it (eucalyptus/euca2ools, euca2ools/commands/ec2/describeimages.py), with the
tools' product-codes column after the visibility:

    IMAGE | image id | manifest location (else owner/name) | owner (alias, else account) |
    state | public or private | product codes | architecture | image type | kernel |
    RAM disk | platform | root device type | virtualization type | hypervisor
"""

from __future__ import annotations

import argparse
from typing import Any

from stockade.classic.core import Command, Context, UsageError, add_filter_option, api_filters

IMAGE_COLUMNS = (
    "ImageId",
    "Location",
    "Owner",
    "State",
    "Visibility",
    "ProductCodes",
    "Architecture",
    "ImageType",
    "KernelId",
    "RamdiskId",
    "Platform",
    "RootDeviceType",
    "VirtualizationType",
    "Hypervisor",
)


def image_columns(image: dict[str, Any]) -> tuple[Any, ...]:
    owner = image.get("OwnerId")
    location = image.get("ImageLocation") or (
        f"{owner}/{image['Name']}" if image.get("Name") else None
    )
    return (
        image.get("ImageId"),
        location,
        image.get("ImageOwnerAlias") or owner,
        image.get("State"),
        "public" if image.get("Public") else "private",
        ",".join(p.get("ProductCodeId", "") for p in image.get("ProductCodes") or []),
        image.get("Architecture"),
        image.get("ImageType"),
        image.get("KernelId"),
        image.get("RamdiskId"),
        image.get("Platform"),
        image.get("RootDeviceType"),
        image.get("VirtualizationType"),
        image.get("Hypervisor"),
    )


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image ids (default: all)")
    p.add_argument(
        "-a", "--all", action="store_true", help="every image you may launch (the default)"
    )
    p.add_argument(
        "-o",
        "--owner",
        action="append",
        default=[],
        metavar="OWNER",
        help="only images of this owner: an account, amazon or self (repeatable)",
    )
    p.add_argument(
        "-x",
        "--executable-by",
        action="append",
        default=[],
        metavar="USER",
        help="only images this account, self or all may launch (repeatable)",
    )
    add_filter_option(p)


def _describe(ctx: Context, a: argparse.Namespace) -> None:
    if a.all and (a.images or a.owner or a.executable_by):
        raise UsageError("-a/--all lists every image: leave out IMAGE, -o and -x")
    params: dict[str, Any] = {}
    if a.images:
        params["ImageIds"] = a.images
    if a.owner:
        params["Owners"] = a.owner
    if a.executable_by:
        params["ExecutableUsers"] = a.executable_by
    if a.filters:
        params["Filters"] = api_filters(a.filters)
    for image in ctx.call_all("DescribeImages", "Images", **params):
        ctx.out.record("IMAGE", *image_columns(image))


DESCRIBE_IMAGES = Command(
    name="ec2-describe-images",
    aliases=("ec2dim",),
    summary="Describe the machine images you may launch.",
    arguments=_arguments,
    run=_describe,
    layouts={"IMAGE": IMAGE_COLUMNS},
    epilog="examples:\n  ec2dim\n  ec2-describe-images ami-eca54085\n  ec2dim -o amazon",
)
