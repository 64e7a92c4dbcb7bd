"""The seeds' group commands, as boto3 calls against the real server.

002: Albert's default group and Mary's apache/appserver groups; 004: bastion, app and db;
000: the dbserver group that admits the appserver group on 3306.
"""

from __future__ import annotations


def perms(ec2, name: str) -> list[tuple]:
    (g,) = ec2.describe_security_groups(GroupNames=[name])["SecurityGroups"]
    out = []
    for p in g["IpPermissions"]:
        for r in p["IpRanges"]:
            out.append((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        for pair in p["UserIdGroupPairs"]:
            out.append((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), pair["GroupId"]))
    return sorted(out, key=str)


def gid(ec2, name: str) -> str:
    return ec2.describe_security_groups(GroupNames=[name])["SecurityGroups"][0]["GroupId"]


def test_albert_opens_ssh_to_his_own_address(ec2):
    default = gid(ec2, "default")
    assert perms(ec2, "default") == [("-1", None, None, default)]
    ec2.authorize_security_group_ingress(
        GroupName="default", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="192.168.1.130/32"
    )
    assert perms(ec2, "default") == sorted(
        [("-1", None, None, default), ("tcp", 22, 22, "192.168.1.130/32")], key=str
    )


def test_mary_three_tier(ec2, account):
    ec2.create_security_group(GroupName="apache", Description="Mary's Apache group")
    ec2.authorize_security_group_ingress(
        GroupName="apache", IpProtocol="tcp", FromPort=80, ToPort=80, CidrIp="0.0.0.0/0"
    )
    (apache,) = ec2.describe_security_groups(GroupNames=["apache"])["SecurityGroups"]
    assert apache["Description"] == "Mary's Apache group"
    assert perms(ec2, "apache") == [("tcp", 80, 80, "0.0.0.0/0")]
    ec2.create_security_group(GroupName="appserver", Description="Mary's app server")
    ec2.authorize_security_group_ingress(
        GroupName="appserver",
        IpPermissions=[
            {
                "IpProtocol": "-1",
                "UserIdGroupPairs": [{"GroupName": "apache", "UserId": account.account_id}],
            }
        ],
    )
    assert perms(ec2, "appserver") == [("-1", None, None, apache["GroupId"])]
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "192.168.1.130/32"}
    ec2.authorize_security_group_ingress(GroupName="apache", **ssh)
    ec2.revoke_security_group_ingress(GroupName="apache", **ssh)
    assert perms(ec2, "apache") == [("tcp", 80, 80, "0.0.0.0/0")]


def test_bastion_app_db_layout(ec2):
    # group names may not start with "sg-" on EC2, so 004's sg-gw is called gw here
    ids: dict[str, str] = {}
    for name in ("gw", "elb", "app", "db"):
        ids[name] = ec2.create_security_group(GroupName=name, Description=f"{name} tier")["GroupId"]

    def from_group(port: int, source: str) -> dict:
        return {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": ids[source]}],
        }

    ec2.authorize_security_group_ingress(
        GroupId=ids["gw"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 62222,
                "ToPort": 62222,
                "IpRanges": [{"CidrIp": "192.168.1.130/32", "Description": "my office"}],
            }
        ],
    )
    ec2.authorize_security_group_ingress(
        GroupId=ids["app"],
        IpPermissions=[from_group(80, "elb"), from_group(443, "elb"), from_group(22, "gw")],
    )
    ec2.authorize_security_group_ingress(GroupId=ids["db"], IpPermissions=[from_group(3306, "app")])
    assert perms(ec2, "gw") == [("tcp", 62222, 62222, "192.168.1.130/32")]
    assert perms(ec2, "app") == sorted(
        [
            ("tcp", 22, 22, ids["gw"]),
            ("tcp", 80, 80, ids["elb"]),
            ("tcp", 443, 443, ids["elb"]),
        ],
        key=str,
    )
    assert perms(ec2, "db") == [("tcp", 3306, 3306, ids["app"])]
    # which groups name the gateway as a source: what a compromised gateway reaches directly
    reach = ec2.describe_security_groups(
        Filters=[{"Name": "ip-permission.group-id", "Values": [ids["gw"]]}]
    )["SecurityGroups"]
    assert [g["GroupName"] for g in reach] == ["app"]


def test_dbserver_admits_appserver_on_3306(ec2, account):
    ec2.create_security_group(GroupName="dbserver", Description="db")
    app = ec2.create_security_group(GroupName="appserver", Description="app")["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupName="dbserver",
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 3306,
                "ToPort": 3306,
                "UserIdGroupPairs": [{"UserId": account.account_id, "GroupName": "appserver"}],
            }
        ],
    )
    assert perms(ec2, "dbserver") == [("tcp", 3306, 3306, app)]
