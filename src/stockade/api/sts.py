"""STS (and IAM) requests on the EC2 endpoint: ``GetCallerIdentity``, as AWS answers it.

Tools that drive AWS ask STS "who am I" before anything else (Ansible's amazon.aws modules,
Terraform's AWS provider, Prowler, Cloud Custodian), on the endpoint they were given for
EC2. A request is routed by its credential scope's service: ``ec2`` to the EC2 actions,
``sts`` (and ``iam``) here, checked by the same SigV4 rules. STS's one action is
``GetCallerIdentity`` (Query protocol, version 2011-06-15); any other action of STS or IAM
gets the error AWS gives for an action it does not know (``InvalidAction``, 400), never a
signature error.

Stockade's keys are an account's own (root) keys, so the caller is the account's root user:
``UserId`` is the account id and ``Arn`` is ``arn:aws:iam::ACCOUNT:root``, as AWS answers
for root credentials.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

#: the services whose requests this module answers (their credential scope's name)
SERVICES = frozenset({"sts", "iam"})
STS_VERSION = "2011-06-15"
IAM_VERSION = "2010-05-08"
_XMLNS = {
    "sts": f"https://sts.amazonaws.com/doc/{STS_VERSION}/",
    "iam": f"https://iam.amazonaws.com/doc/{IAM_VERSION}/",
}


def caller_identity(account_id: str) -> dict[str, str]:
    """What GetCallerIdentity answers for an account's (root) keys."""
    return {"Account": account_id, "UserId": account_id, "Arn": f"arn:aws:iam::{account_id}:root"}


def error(service: str, code: str, message: str, request_id: str) -> bytes:
    """STS's and IAM's error document (``ErrorResponse``, not EC2's ``Response``)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ErrorResponse xmlns="{_XMLNS[service]}">\n'
        f"  <Error>\n"
        f"    <Type>Sender</Type>\n"
        f"    <Code>{escape(code)}</Code>\n"
        f"    <Message>{escape(message)}</Message>\n"
        f"  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        f"</ErrorResponse>\n"
    ).encode()


def answer(service: str, action: str | None, account_id: str, request_id: str) -> tuple[int, bytes]:
    """(HTTP status, XML body) for a correctly signed STS or IAM request."""
    if not action:
        return 400, error(
            service, "MissingAction", "The request must contain the parameter Action.", request_id
        )
    if service != "sts" or action != "GetCallerIdentity":
        shown = action if len(action) <= 64 else action[:64] + "..."
        message = f"Could not find operation {shown} for version {_version(service)}"
        return 400, error(service, "InvalidAction", message, request_id)
    fields = "".join(
        f"    <{k}>{escape(v)}</{k}>\n" for k, v in caller_identity(account_id).items()
    )
    body = (
        f'<GetCallerIdentityResponse xmlns="{_XMLNS["sts"]}">\n'
        f"  <GetCallerIdentityResult>\n{fields}  </GetCallerIdentityResult>\n"
        f"  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n"
        f"  </ResponseMetadata>\n"
        f"</GetCallerIdentityResponse>\n"
    )
    return 200, body.encode()


def _version(service: str) -> str:
    return STS_VERSION if service == "sts" else IAM_VERSION
