"""The sandbox's resolvers and metadata service, wired to the region's current snapshot."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stockade.sandbox.dns import DnsServer, public_dns_name, split_horizon
from stockade.sandbox.hostd import decode_user_data
from stockade.sandbox.metadata import MetadataServer

if TYPE_CHECKING:
    from stockade.sandbox.hostd import HostDaemon
    from stockade.sandbox.region import Sandbox


def _public_to_private(sandbox: Sandbox) -> Callable[[str], str | None]:
    def lookup(public_ip: str) -> str | None:
        for iface in sandbox.snapshot.get("interfaces", ()):
            if iface.get("public_ipv4") == public_ip:
                return iface["private_ipv4"][0]
        return None

    return lookup


def inside_resolver(sandbox: Sandbox) -> Callable[[socket.socket, socket.socket], DnsServer]:
    """The resolver at 169.254.169.253 of every host: public names answer private IPs."""
    resolver = split_horizon(lambda _ip: True, _public_to_private(sandbox), sandbox.public_domain)
    return lambda udp, tcp: DnsServer(resolver, udp_sock=udp, tcp_sock=tcp)


def outside_resolver(sandbox: Sandbox) -> Callable[[socket.socket, socket.socket], DnsServer]:
    """The internet's resolver: public names answer public IPs; private names are unknown."""
    resolver = split_horizon(lambda _ip: False, _public_to_private(sandbox), sandbox.public_domain)
    return lambda udp, tcp: DnsServer(resolver, udp_sock=udp, tcp_sock=tcp)


def metadata_server(sandbox: Sandbox) -> Callable[[HostDaemon, socket.socket], MetadataServer]:
    def factory(daemon: HostDaemon, sock: socket.socket) -> MetadataServer:
        def lookup(client_ip: str) -> dict[str, Any] | None:
            inst = daemon.by_private_ip(client_ip)
            if inst is None:
                return None
            p = inst.placement
            eni = p["interfaces"][0]
            snap = sandbox.snapshot
            live = next(
                (i for i in snap.get("interfaces", ()) if i["instance_id"] == p["instance_id"]),
                None,
            )
            names = {g["id"]: g["name"] for g in snap.get("groups", ())}
            group_ids = live["group_ids"] if live else eni.get("group_ids", [])
            public_ip = live.get("public_ipv4") if live else eni.get("public_ip")
            user_data = decode_user_data(p.get("user_data"))
            data: dict[str, Any] = {
                "instance-id": p["instance_id"],
                "ami-id": p["image_id"],
                "instance-type": p["instance_type"],
                "local-ipv4": inst.private_ip,
                "local-hostname": p.get("private_dns_name") or "",
                "security-groups": [names.get(g, g) for g in group_ids],
                "placement/availability-zone": p["availability_zone"],
                "placement/region": p["region"],
                "mac": eni.get("mac_address", ""),
                "reservation-id": p.get("reservation_id", ""),
                "account-id": p.get("account_id", ""),
                "user-data": user_data.decode("utf-8", "replace") if user_data else None,
            }
            if inst.launch_key is not None:
                data["public-keys"] = [inst.launch_key]
            if public_ip:
                data["public-ipv4"] = public_ip
                data["public-hostname"] = public_dns_name(
                    public_ip, p["region"], sandbox.public_domain
                )
            return data

        return MetadataServer(lookup, sock=sock)

    return factory
