"""The database schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create it.

Names inside are snake_case; EC2 spellings live only in the API codec.
Every mutation of a resource appends a row to ``changes`` in the same transaction, so the
change log's order is the commit order (writers are serialised on the ``counters`` row).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE"), index=True),
    Column("secret_access_key", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
)

# One row per account and region that has been used: holds the default VPC id and is the
# row that serialises quota checks of that account+region.
regions = Table(
    "account_regions",
    metadata,
    Column("account_id", String(12), ForeignKey("accounts.id", ondelete="CASCADE")),
    Column("region", String(32)),
    Column("default_vpc_id", String(32), nullable=False),
    UniqueConstraint("account_id", "region"),
)

vpcs = Table(
    "vpcs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("cidr", String(64), nullable=False),
    Column("is_default", Boolean, nullable=False, default=False),
    Column("state", String(16), nullable=False, default="available"),
    Index("ix_vpcs_owner", "account_id", "region"),
)

subnets = Table(
    "subnets",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("vpc_id", String(32), ForeignKey("vpcs.id"), nullable=False, index=True),
    Column("cidr", String(64), nullable=False),
    Column("availability_zone", String(32), nullable=False),
    Column("default_for_az", Boolean, nullable=False, default=False),
    Column("map_public_ip", Boolean, nullable=False, default=False),
    Index("ix_subnets_owner", "account_id", "region"),
)

security_groups = Table(
    "security_groups",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("vpc_id", String(32), ForeignKey("vpcs.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", String(255), nullable=False),
    UniqueConstraint("vpc_id", "name", name="uq_group_name_per_vpc"),
    Index("ix_groups_owner", "account_id", "region"),
)

rules = Table(
    "sg_rules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "group_id",
        String(32),
        ForeignKey("security_groups.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("egress", Boolean, nullable=False),
    # "-1" for all, else the IP protocol number as text ("6", "17", "1", "58", "50", ...)
    Column("protocol", String(8), nullable=False),
    Column("from_port", Integer, nullable=True),
    Column("to_port", Integer, nullable=True),
    Column("cidr_ipv4", String(64), nullable=True),
    Column("cidr_ipv6", String(64), nullable=True),
    Column("prefix_list_id", String(64), nullable=True),
    Column("ref_group_id", String(32), nullable=True),
    Column("ref_user_id", String(12), nullable=True),
    Column("description", String(255), nullable=True),
    Index("ix_rules_owner", "account_id", "region"),
    # a group's rules in order, straight from the index (migration 0002)
    Index("ix_sg_rules_group_seq", "group_id", "seq"),
    # only the rules that reference a group: CIDR rules cost no page of it (migration 0002)
    Index(
        "ix_sg_rules_ref_group_id",
        "ref_group_id",
        sqlite_where=text("ref_group_id IS NOT NULL"),
        postgresql_where=text("ref_group_id IS NOT NULL"),
    ),
)

tags = Table(
    "tags",
    metadata,
    Column("resource_id", String(32), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Index("ix_tags_owner", "account_id", "region"),
)

changes = Table(
    "changes",
    metadata,
    # on SQLite the INTEGER PRIMARY KEY, i.e. the rowid: no index beside the table
    # (migration 0002)
    Column(
        "revision",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("data", JSON, nullable=True),
    Column("at", String(32), nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- instances, their network interfaces, Elastic IPs, key pairs --------------------------

# One launch request. ``client_token`` makes RunInstances idempotent per account+region;
# ``request_hash`` detects a token reused with other parameters; ``groups`` are the launch
# groups ([{group_id, group_name}]) the reservation reports.
reservations = Table(
    "reservations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("client_token", String(64), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("groups", JSON, nullable=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("account_id", "region", "client_token", name="uq_reservation_token"),
    Index("ix_reservations_owner", "account_id", "region"),
)

# ``host`` is NULL until a host claims the pending instance (and again once it is stopped
# or terminated); terminated instances stay as records without interfaces.
instances = Table(
    "instances",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("reservation_id", String(32), ForeignKey("reservations.id"), nullable=False),
    Column("launch_index", Integer, nullable=False),
    Column("image_id", String(32), nullable=False),
    Column("instance_type", String(32), nullable=False),
    Column("key_name", String(255), nullable=True),
    Column("subnet_id", String(32), nullable=False),
    Column("vpc_id", String(32), nullable=False),
    Column("availability_zone", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_reason", String(64), nullable=True),
    Column("transition_reason", String(255), nullable=True),
    Column("launch_time", String(32), nullable=False),
    Column("user_data", Text, nullable=True),
    Column("disable_api_termination", Boolean, nullable=False, default=False),
    Column("shutdown_behavior", String(16), nullable=False, default="stop"),
    Column("host", String(128), nullable=True),
    Index("ix_instances_owner", "account_id", "region"),
    Index("ix_instances_state_host", "state", "host"),
)

# One row per network interface; a private IP is unique in its subnet while the interface
# exists, a pool public IP (``public_ip``) is unique everywhere. An interface with an
# Elastic IP has no pool address: the Elastic IP (``addresses``) is its public address.
network_interfaces = Table(
    "network_interfaces",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column(
        "subnet_id",
        String(32),
        ForeignKey("subnets.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("vpc_id", String(32), nullable=False),
    Column("availability_zone", String(32), nullable=False),
    Column("private_ip", String(64), nullable=False),
    Column("mac_address", String(17), nullable=False),
    Column("description", String(255), nullable=False, default=""),
    Column("instance_id", String(32), ForeignKey("instances.id"), nullable=True, index=True),
    Column("device_index", Integer, nullable=True),
    Column("attachment_id", String(40), nullable=True),
    Column("attach_time", String(32), nullable=True),
    Column("status", String(16), nullable=False),
    Column("public_ip", String(64), nullable=True, unique=True),
    Column("wants_public_ip", Boolean, nullable=False, default=False),
    Column("source_dest_check", Boolean, nullable=False, default=True),
    Column("delete_on_termination", Boolean, nullable=False, default=True),
    Column("created_at", String(32), nullable=False),
    # secondary private IPv4 addresses and IPv6 addresses, as lists of text (migration 0003)
    Column("secondary_ips", JSON, nullable=True),
    Column("ipv6_addresses", JSON, nullable=True),
    UniqueConstraint("subnet_id", "private_ip", name="uq_private_ip_per_subnet"),
    Index("ix_interfaces_owner", "account_id", "region"),
)

# The security groups of an interface, in the order they were given.
interface_groups = Table(
    "interface_groups",
    metadata,
    Column(
        "interface_id",
        String(32),
        ForeignKey("network_interfaces.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "group_id",
        String(32),
        ForeignKey("security_groups.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    Column("position", Integer, nullable=False),
)

# Elastic IPs (domain vpc). ``interface_id``/``association_id``/``private_ip`` are set while
# the address is associated.
addresses = Table(
    "addresses",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("public_ip", String(64), nullable=False, unique=True),
    Column("domain", String(16), nullable=False, default="vpc"),
    Column(
        "interface_id",
        String(32),
        ForeignKey("network_interfaces.id", ondelete="SET NULL"),
        nullable=True,
        unique=True,
    ),
    Column("association_id", String(40), nullable=True, unique=True),
    Column("private_ip", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Index("ix_addresses_owner", "account_id", "region"),
)

key_pairs = Table(
    "key_pairs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("account_id", "region", "name", name="uq_key_name"),
    Index("ix_key_pairs_owner", "account_id", "region"),
)

# --- IPv6 blocks and managed prefix lists (migration 0003) ----------------------------------

# A CIDR block associated with a VPC or a subnet beyond its primary IPv4 one: the VPC's
# Amazon-provided IPv6 /56, a subnet's IPv6 /64, a VPC's secondary IPv4 blocks.
cidr_blocks = Table(
    "cidr_blocks",
    metadata,
    Column("id", String(48), primary_key=True),  # the association id
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("resource_id", String(32), nullable=False, index=True),  # vpc-... or subnet-...
    Column("cidr", String(64), nullable=False),
    Column("ipv6", Boolean, nullable=False),
    Column("created_at", String(32), nullable=False),
)

managed_prefix_lists = Table(
    "managed_prefix_lists",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("address_family", String(8), nullable=False),  # IPv4 / IPv6
    Column("max_entries", Integer, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("created_at", String(32), nullable=False),
    Index("ix_prefix_lists_owner", "account_id", "region"),
)

prefix_list_entries = Table(
    "prefix_list_entries",
    metadata,
    Column(
        "prefix_list_id",
        String(32),
        ForeignKey("managed_prefix_lists.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("cidr", String(64), primary_key=True),
    Column("description", String(255), nullable=True),
)

# Reachability Analyzer paths (nip-) and analyses (nia-), Network Access Analyzer scopes
# (nis-) and their analyses (nisa-): ``data`` holds the request and the answer,
# ``parent_id`` the path or scope an analysis belongs to (migration 0003i).
insights = Table(
    "insights",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("parent_id", String(48), nullable=True),
    Column("data", JSON, nullable=False),
    Column("created_at", String(32), nullable=False),
    Index("ix_insights_owner", "account_id", "region", "kind"),
)

# Attributes of a resource that only EC2's Describe*/Modify*Attribute actions read (a VPC's
# DNS settings, a subnet's launch settings, an instance's metadata options and credit
# specification, an address's reverse DNS name): one row per attribute set away from its
# default, the value as JSON. Deleted with the resource (see resources.drop_attributes).
attributes = Table(
    "attributes",
    metadata,
    Column("resource_id", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
)

# Subnet CIDR reservations (CreateSubnetCidrReservation): blocks of a subnet kept for
# explicit assignment or prefix delegation; deleted with their subnet.
subnet_cidr_reservations = Table(
    "subnet_cidr_reservations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("subnet_id", String(32), nullable=False, index=True),
    Column("cidr", String(64), nullable=False),
    Column("reservation_type", String(16), nullable=False),
    Column("description", String(255), nullable=True),
)
