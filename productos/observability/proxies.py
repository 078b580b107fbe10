"""The client's address behind load balancers: X-Forwarded-For, believed only from trusted proxies."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from productos.settings import parse_proxies

_CACHE_LIMIT = 4096


class TrustedProxies:
    """The proxies (the ALB's subnets, say) whose X-Forwarded-For is believed.

    Args:
        spec: addresses and CIDR networks, comma-separated or as an iterable; ``*`` trusts every peer (only
            when nothing but the load balancer can reach the instance). Empty: trust none.
    """

    def __init__(self, spec: str | Iterable[str] = "") -> None:
        entries = parse_proxies(spec)
        self.trust_all = "*" in entries
        self.networks: tuple[IPv4Network | IPv6Network, ...] = tuple(
            ip_network(entry, strict=False) for entry in entries if entry != "*"
        )
        self._verdicts: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return self.trust_all or bool(self.networks)

    def trusts(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            if self.trust_all:
                verdict = True
            else:
                try:
                    address = ip_address(host)
                except ValueError:
                    verdict = False
                else:
                    verdict = any(address in network for network in self.networks)
            if len(self._verdicts) >= _CACHE_LIMIT:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer's own, unless the peer is trusted and says whom it forwards for.

        Each proxy appends the address it received the request from, so X-Forwarded-For is read right to
        left; the first address that is not a trusted proxy is the client (entries further left are whatever
        the client sent, and could be forged).
        """
        if peer is None or not forwarded_for or not self or not self.trusts(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        for hop in reversed(hops):
            if hop and not self.trusts(hop):
                return hop
        return next((hop for hop in hops if hop), peer)
