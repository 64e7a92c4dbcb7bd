"""Per-instance options that only their own actions read: metadata options
(ModifyInstanceMetadataOptions), CPU credit specifications (Describe/Modify
InstanceCreditSpecification(s)), tenancy (ModifyInstancePlacement); and the reverse DNS
names of Elastic IPs (Describe/ModifyAddressesAttribute, ResetAddressAttribute).

Values away from EC2's defaults are kept in the ``attributes`` table
(:func:`stockade.service.resources.set_attribute`); DescribeInstances shows them through
:func:`metadata_options` and :func:`tenancy`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from stockade.errors import ApiError
from stockade.service import instance_types, resources
from stockade.service.common import Ctx, FilterSpec, Params, Result, action
from stockade.service.describe import Describe
from stockade.store import schema

METADATA_DEFAULTS: dict[str, Any] = {
    "http_tokens": "optional",
    "http_put_response_hop_limit": 1,
    "http_endpoint": "enabled",
    "http_protocol_ipv6": "disabled",
    "instance_metadata_tags": "disabled",
}
_METADATA_VALUES = {
    "http_tokens": ("optional", "required"),
    "http_endpoint": ("disabled", "enabled"),
    "http_protocol_ipv6": ("disabled", "enabled"),
    "instance_metadata_tags": ("disabled", "enabled"),
}
_WIRE = {
    "http_tokens": "HttpTokens",
    "http_put_response_hop_limit": "HttpPutResponseHopLimit",
    "http_endpoint": "HttpEndpoint",
    "http_protocol_ipv6": "HttpProtocolIpv6",
    "instance_metadata_tags": "InstanceMetadataTags",
}


def metadata_options(stored: dict[str, Any]) -> Result:
    return {"state": "applied", **METADATA_DEFAULTS, **stored.get("metadataOptions", {})}


def tenancy(stored: dict[str, Any]) -> str:
    return str(stored.get("tenancy", "default"))


def _live(ctx: Ctx, instance_id: Any) -> Row:
    row = resources.get(ctx, instance_id, "i")
    if row.state == "terminated":
        raise ApiError(
            "IncorrectInstanceState",
            f"The instance '{row.id}' is not in a state from which it can be modified.",
        )
    return row


@action("ModifyInstanceMetadataOptions", write=True)
def modify_instance_metadata_options(ctx: Ctx, p: Params) -> Result:
    row = _live(ctx, p.get("instance_id"))
    changes: dict[str, Any] = {}
    for key, allowed in _METADATA_VALUES.items():
        value = p.get(key)
        if value is None:
            continue
        if value not in allowed:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({value}) for parameter {_WIRE[key]} is invalid. "
                f"Valid values: {', '.join(allowed)}",
            )
        changes[key] = value
    hops = p.get("http_put_response_hop_limit")
    if hops is not None:
        if not 1 <= hops <= 64:
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({hops}) for parameter HttpPutResponseHopLimit is invalid. "
                "Expecting a value between 1 and 64.",
            )
        changes["http_put_response_hop_limit"] = hops
    stored = resources.attributes_of(ctx, [row.id]).get(row.id, {})
    options = {**stored.get("metadataOptions", {}), **changes}
    if changes:
        resources.set_attribute(ctx, row.id, "metadataOptions", options)
        ctx.log("instance.metadata_options", row.id, **changes)
    return {
        "instance_id": row.id,
        "instance_metadata_options": metadata_options({"metadataOptions": options}),
    }


def _default_credits(instance_type: str) -> str:
    # T2 instances launch with standard credits, T3 and later with unlimited ones
    return "standard" if instance_type.startswith("t2.") else "unlimited"


def _burstable(instance_type: str) -> bool:
    t = instance_types.TABLE.get(instance_type)
    return t is not None and t.burstable


def _credit_results(ctx: Ctx, rows: list[Row]) -> list[Result]:
    stored = resources.attributes_of(ctx, [r.id for r in rows])
    return [
        {
            "instance_id": r.id,
            "cpu_credits": stored.get(r.id, {}).get("cpuCredits")
            or _default_credits(r.instance_type),
        }
        for r in rows
        if _burstable(r.instance_type) and r.state != "terminated"
    ]


CREDIT_FILTERS: FilterSpec = {"instance-id": lambda c: [c["instance_id"]]}
CREDITS = Describe(
    "instance_credit_specifications",
    CREDIT_FILTERS,
    _credit_results,
    table=schema.instances,
    prefix="i",
    ids="instance_ids",
    ids_wire="InstanceIds",
    pushed={"instance-id": schema.instances.c.id},
    sort="instance_id",
)


@action("DescribeInstanceCreditSpecifications", write=False)
def describe_instance_credit_specifications(ctx: Ctx, p: Params) -> Result:
    return CREDITS.run(ctx, p)


@action("ModifyInstanceCreditSpecification", write=True)
def modify_instance_credit_specification(ctx: Ctx, p: Params) -> Result:
    specs = p.get("instance_credit_specifications") or []
    if not specs:
        raise ApiError(
            "MissingParameter",
            "The request must contain the parameter InstanceCreditSpecification",
        )
    ok: list[Result] = []
    failed: list[Result] = []
    for spec in specs:
        iid, credits = spec.get("instance_id"), spec.get("cpu_credits")
        if credits not in ("standard", "unlimited"):
            raise ApiError(
                "InvalidParameterValue",
                f"Value ({credits}) for parameter CpuCredits is invalid. "
                "Valid values: standard, unlimited",
            )
        try:
            row = _live(ctx, iid)
        except ApiError as err:
            failed.append({"instance_id": iid, "error": {"code": err.code, "message": err.message}})
            continue
        if not _burstable(row.instance_type):
            failed.append(
                {
                    "instance_id": iid,
                    "error": {
                        "code": "InvalidInstanceType",
                        "message": f"The instance type {row.instance_type} does not support "
                        "CPU credits.",
                    },
                }
            )
            continue
        resources.set_attribute(ctx, row.id, "cpuCredits", credits)
        ctx.log("instance.credits", row.id, cpu_credits=credits)
        ok.append({"instance_id": row.id})
    return {
        "successful_instance_credit_specifications": ok,
        "unsuccessful_instance_credit_specifications": failed,
    }


TENANCIES = ("default", "dedicated", "host")


@action("ModifyInstancePlacement", write=True)
def modify_instance_placement(ctx: Ctx, p: Params) -> Result:
    row = _live(ctx, p.get("instance_id"))
    for key in ("group_name", "group_id", "partition_number", "host_id", "affinity"):
        if p.get(key) is not None:
            raise ApiError(
                "UnsupportedOperation", f"Stockade does not support {key} in a placement."
            )
    value = p.get("tenancy")
    if value is None:
        raise ApiError("MissingParameter", "The request must contain the parameter Tenancy")
    if value not in ("dedicated", "host"):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({value}) for parameter Tenancy is invalid. Valid values: dedicated, host",
        )
    if row.state != "stopped":
        raise ApiError(
            "IncorrectInstanceState",
            f"The instance '{row.id}' is not in the 'stopped' state.",
        )
    resources.set_attribute(ctx, row.id, "tenancy", value)
    ctx.log("instance.tenancy", row.id, tenancy=value)
    return {"return": True}


# --- addresses' reverse DNS -----------------------------------------------------------------


def _address_attribute(ctx: Ctx, row: Row, stored: dict[str, Any]) -> Result:
    out: Result = {"public_ip": row.public_ip, "allocation_id": row.id}
    name = stored.get("domainName")
    if name:
        out["ptr_record"] = name
    return out


def _address_attributes(ctx: Ctx, rows: list[Row]) -> list[Result]:
    stored = resources.attributes_of(ctx, [r.id for r in rows])
    return [_address_attribute(ctx, r, stored.get(r.id, {})) for r in rows]


ADDRESS_ATTRIBUTES = Describe(
    "addresses",
    {},
    _address_attributes,
    table=schema.addresses,
    prefix="eipalloc",
    ids="allocation_ids",
    sort="allocation_id",
    max_range=(1, 1000),
)


@action("DescribeAddressesAttribute", write=False)
def describe_addresses_attribute(ctx: Ctx, p: Params) -> Result:
    attribute = p.get("attribute")
    if attribute is not None and attribute != "domain-name":
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({attribute}) for parameter attribute is invalid. Valid values: domain-name",
        )
    return ADDRESS_ATTRIBUTES.run(ctx, p)


def _check_domain(value: Any) -> str:
    text = str(value or "")
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or any(not 1 <= len(x) <= 63 for x in labels):
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({text}) for parameter DomainName is invalid. It must be a domain name.",
        )
    return text


@action("ModifyAddressAttribute", write=True)
def modify_address_attribute(ctx: Ctx, p: Params) -> Result:
    row = resources.get(ctx, p.get("allocation_id"), "eipalloc")
    if p.get("domain_name") is None:
        raise ApiError("MissingParameter", "The request must contain the parameter DomainName")
    name = _check_domain(p["domain_name"])
    resources.set_attribute(ctx, row.id, "domainName", name)
    ctx.log("address.attribute", row.id, domain_name=name)
    return {"address": _address_attribute(ctx, row, {"domainName": name})}


@action("ResetAddressAttribute", write=True)
def reset_address_attribute(ctx: Ctx, p: Params) -> Result:
    row = resources.get(ctx, p.get("allocation_id"), "eipalloc")
    if p.get("attribute") != "domain-name":
        raise ApiError(
            "InvalidParameterValue",
            f"Value ({p.get('attribute')}) for parameter attribute is invalid. "
            "Valid values: domain-name",
        )
    resources.drop_attributes(ctx, [row.id])
    ctx.log("address.attribute", row.id, domain_name=None)
    return {"address": _address_attribute(ctx, row, {})}
