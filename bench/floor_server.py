"""The boto3 floor: a Starlette app on uvicorn (as ``stockade serve`` runs) that answers
every EC2 request with a canned, valid reply of the same shape and size as Stockade's.
No auth, no store: what is left of a call's time is boto3, HTTP and the server stack.

``python bench/floor_server.py --port P --groups N`` (N: how many groups the paginated
DescribeSecurityGroups pretends to hold).
"""

from __future__ import annotations

import argparse
import itertools
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
OWNER = "123456789012"
_ids = itertools.count(1)


def _wrap(action: str, body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NS}">'
        f"<requestId>4044bb54-93cb-402e-907d-d7e5b6a59992</requestId>{body}</{action}Response>"
    )


def _rule(i: int, ref: bool) -> str:
    peer = (
        f"<referencedGroupInfo><groupId>sg-{i:017x}</groupId><userId>{OWNER}</userId>"
        "</referencedGroupInfo>"
        if ref
        else "<cidrIpv4>10.1.0.0/16</cidrIpv4>"
    )
    return (
        f"<item><securityGroupRuleId>sgr-{i:017x}</securityGroupRuleId>"
        f"<groupId>sg-{i:017x}</groupId><groupOwnerId>{OWNER}</groupOwnerId>"
        f"<isEgress>false</isEgress><ipProtocol>tcp</ipProtocol><fromPort>{i % 65536}</fromPort>"
        f"<toPort>{i % 65536}</toPort>{peer}<tagSet/><securityGroupRuleArn>arn:aws:ec2:"
        f"us-east-1:{OWNER}:security-group-rule/sgr-{i:017x}</securityGroupRuleArn></item>"
    )


def _permission(port: int, ref: str | None) -> str:
    groups = f"<groups><item><userId>{OWNER}</userId><groupId>{ref}</groupId></item></groups>"
    if ref is None:
        return (
            f"<item><ipProtocol>tcp</ipProtocol><fromPort>{port}</fromPort><toPort>{port}"
            "</toPort><groups/><ipRanges><item><cidrIp>10.1.0.0/16</cidrIp></item></ipRanges>"
            "<ipv6Ranges/><prefixListIds/></item>"
        )
    return (
        f"<item><ipProtocol>tcp</ipProtocol><fromPort>{port}</fromPort><toPort>{port}</toPort>"
        f"{groups}<ipRanges/><ipv6Ranges/><prefixListIds/></item>"
    )


def _group(i: int) -> str:
    gid = f"sg-{i:017x}"
    perms = "".join(_permission(p, None) for p in (22, 80, 443))
    perms += "".join(_permission(p, f"sg-{i + k:017x}") for k, p in ((1, 8080), (7, 5432)))
    return (
        f"<item><groupId>{gid}</groupId><ipPermissionsEgress><item><ipProtocol>-1</ipProtocol>"
        "<groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges><ipv6Ranges/>"
        "<prefixListIds/></item></ipPermissionsEgress><vpcId>vpc-afc5c0517d77d0229</vpcId>"
        f"<securityGroupArn>arn:aws:ec2:us-east-1:{OWNER}:security-group/{gid}"
        f"</securityGroupArn><ownerId>{OWNER}</ownerId><groupName>lat-{i}</groupName>"
        f"<groupDescription>latency</groupDescription><ipPermissions>{perms}</ipPermissions>"
        "</item>"
    )


def build(total: int) -> Starlette:
    """The app; DescribeSecurityGroups pages through ``total`` canned groups."""
    authorize = _wrap(
        "AuthorizeSecurityGroupIngress",
        "<return>true</return><securityGroupRuleSet>"
        + "".join(_rule(i, i >= 3) for i in range(5))
        + "</securityGroupRuleSet>",
    )
    revoke = _wrap(
        "RevokeSecurityGroupIngress",
        "<return>true</return><revokedSecurityGroupRuleSet>"
        + "".join(_rule(i, i >= 3) for i in range(5))
        + "</revokedSecurityGroupRuleSet>",
    )
    delete = _wrap("DeleteSecurityGroup", "<return>true</return>")
    groups = [_group(i) for i in range(total + 1)]

    async def handle(request: Request) -> Response:
        params = parse_qs((await request.body()).decode())
        action = params.get("Action", [""])[0]
        if action == "CreateSecurityGroup":
            gid = f"sg-{next(_ids):017x}"
            text = _wrap(
                action,
                f"<groupId>{gid}</groupId><securityGroupArn>arn:aws:ec2:us-east-1:{OWNER}:"
                f"security-group/{gid}</securityGroupArn>",
            )
        elif action == "AuthorizeSecurityGroupIngress":
            text = authorize
        elif action == "RevokeSecurityGroupIngress":
            text = revoke
        elif action == "DeleteSecurityGroup":
            text = delete
        elif action == "DescribeSecurityGroups":
            size = int(params.get("MaxResults", ["1000"])[0])
            start = int(params.get("NextToken", ["0"])[0])
            end = min(start + size, len(groups))
            token = f"<nextToken>{end}</nextToken>" if end < len(groups) else ""
            text = _wrap(
                action, f"<securityGroupInfo>{''.join(groups[start:end])}</securityGroupInfo>"
            )
            text = text.replace("</DescribeSecurityGroupsResponse>", token + "</Describe")
            text += "SecurityGroupsResponse>"
        else:
            text = _wrap(action or "Unknown", "<return>true</return>")
        return Response(text, media_type="text/xml")

    return Starlette(routes=[Route("/", handle, methods=["POST"])])


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--groups", type=int, default=1000)
    args = ap.parse_args()
    uvicorn.run(
        build(args.groups), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
