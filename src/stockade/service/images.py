"""A small built-in catalogue of machine images: the seeds' AMIs and Stockade's own.

Images are not stored: every account in every region sees the same public catalogue.
An image names what a sandbox instance runs when it boots (its services, started before
any user data); nothing else depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stockade.errors import ApiError
from stockade.service.common import (
    Ctx,
    FilterSpec,
    Params,
    Result,
    action,
    check_id,
)
from stockade.service.describe import Describe

CATALOGUE_OWNER = "137112412989"  # the owner id EC2 shows for Amazon's public images
CREATED = "2007-07-11T16:40:44.000Z"

# What an image runs when it boots, before any user data (the sandbox starts these inside the
# instance's namespace): "ssh" an OpenSSH server on 22 that accepts the launch key pair,
# "web" a web server on 80 serving a page, "app" an application service on 8080 (HTTP),
# "mysql" a MySQL-protocol listener on 3306 (it sends the server greeting).
SERVICE_PORTS: dict[str, int] = {"ssh": 22, "web": 80, "app": 8080, "mysql": 3306}
_SERVICE_TEXT = {
    "ssh": "an SSH server on port 22",
    "web": "a web server on port 80",
    "app": "an application service on port 8080",
    "mysql": "a MySQL server on port 3306",
}


@dataclass(frozen=True)
class Image:
    name: str
    summary: str
    services: tuple[str, ...]

    @property
    def description(self) -> str:
        """What the image is and runs, as EC2's images describe themselves."""
        runs = [_SERVICE_TEXT[s] for s in self.services]
        if not runs:
            return self.summary
        text = runs[0] if len(runs) == 1 else ", ".join(runs[:-1]) + " and " + runs[-1]
        return f"{self.summary}: runs {text}"


CATALOGUE: dict[str, Image] = {
    "ami-eca54085": Image("getting-started", "Albert's favourite public AMI (seed 002)", ("ssh",)),
    "ami-fba54092": Image("apache-web-server", "Mary's Apache web tier (seed 002)", ("web", "ssh")),
    "ami-e3a5408a": Image("app-server", "Mary's application tier (seed 002)", ("app", "ssh")),
    "ami-f1a54098": Image(
        "multi-master-database", "Mary's database tier (seed 002)", ("mysql", "ssh")
    ),
    "ami-05d0b1ac3c0f41e5a": Image(
        "stockade-debian-12-amd64", "Debian 12 for the Stockade sandbox", ("ssh",)
    ),
    "ami-0b7e4c2f1d9a36e58": Image(
        "stockade-alpine-3-amd64", "Alpine Linux for the Stockade sandbox", ("ssh",)
    ),
}
DEFAULT_IMAGE = "ami-05d0b1ac3c0f41e5a"


def services_of(image_id: str | None) -> tuple[str, ...]:
    """The services an image runs at boot (none for an image not in the catalogue)."""
    image = CATALOGUE.get(image_id or "")
    return image.services if image is not None else ()


def image_result(image_id: str) -> Result:
    image = CATALOGUE[image_id]
    name, desc = image.name, image.description
    return {
        "image_id": image_id,
        "image_location": f"amazon/{name}",
        "state": "available",
        "owner_id": CATALOGUE_OWNER,
        "image_owner_alias": "amazon",
        "creation_date": CREATED,
        "public": True,
        "architecture": "x86_64",
        "image_type": "machine",
        "platform_details": "Linux/UNIX",
        "usage_operation": "RunInstances",
        "name": name,
        "description": desc,
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "block_device_mappings": [],
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "ena_support": True,
        "tags": [],
    }


def _not_found(ids: list[str]) -> ApiError:
    if len(ids) == 1:
        return ApiError("InvalidAMIID.NotFound", f"The image id '[{ids[0]}]' does not exist")
    return ApiError("InvalidAMIID.NotFound", f"The image ids '[{', '.join(ids)}]' do not exist")


def check_image(image_id: object) -> str:
    """A catalogue image id, or EC2's Malformed / NotFound error."""
    check_id(image_id, "ami", "InvalidAMIID.Malformed")
    assert isinstance(image_id, str)
    if image_id not in CATALOGUE:
        raise _not_found([image_id])
    return image_id


IMAGE_FILTERS: FilterSpec = {
    "image-id": lambda i: [i["image_id"]],
    "name": lambda i: [i["name"]],
    "description": lambda i: [i["description"]],
    "architecture": lambda i: [i["architecture"]],
    "state": lambda i: [i["state"]],
    "owner-id": lambda i: [i["owner_id"]],
    "owner-alias": lambda i: [i["image_owner_alias"]],
    "is-public": lambda i: [i["public"]],
    "image-type": lambda i: [i["image_type"]],
    "root-device-type": lambda i: [i["root_device_type"]],
    "virtualization-type": lambda i: [i["virtualization_type"]],
    "hypervisor": lambda i: [i["hypervisor"]],
    "platform-details": lambda i: [i["platform_details"]],
}


def _image_ids(ctx: Ctx, p: Params, pushed: dict[str, list[str]]) -> list[str]:
    """The catalogue images asked for (each must exist) that the owners and users allow."""
    ids = list(dict.fromkeys(p.get("image_ids") or []))
    for image_id in ids:
        check_id(image_id, "ami", "InvalidAMIID.Malformed")
    missing = [i for i in ids if i not in CATALOGUE]
    if missing:
        raise _not_found(missing)
    owners = p.get("owners") or []
    # every catalogue image is Amazon's and public: "self" and other accounts own none
    if owners and not {"amazon", CATALOGUE_OWNER} & set(owners):
        return []
    users = p.get("executable_users") or []
    if users and not {"all", "self", ctx.account_id} & set(users):
        return []
    return ids or list(CATALOGUE)


IMAGES = Describe(
    "images",
    IMAGE_FILTERS,
    lambda ctx, ids: [image_result(i) for i in ids],
    ids="image_ids",
    ids_wire="imagesSet",
    sort="image_id",
    source=_image_ids,
)


@action("DescribeImages", write=False)
def describe_images(ctx: Ctx, p: Params) -> Result:
    return IMAGES.run(ctx, p)
