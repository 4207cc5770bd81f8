"""Redis Cluster URLs: where a Redis Cluster's startup nodes are written in one setting.

    redis+cluster://[user[:password]@]host:port[,host:port ...][/0]
    rediss+cluster://...          (TLS)

Any reachable node is enough for a cluster client (it asks that node for the slot map), but
listing several lets it start while one is down. A cluster has only database 0. Hosts may be
names, IPv4 addresses or bracketed IPv6 addresses (``[::1]:7000``); a missing port is 6379.
`driftline stack up --redis-cluster` prints such a URL for the local cluster.

>>> u = parse_cluster_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/0")
>>> u.nodes, u.tls
((('127.0.0.1', 7000), ('127.0.0.1', 7001)), False)
>>> cluster_url([("127.0.0.1", 7000), ("::1", 7001)], tls=True)
'rediss+cluster://127.0.0.1:7000,[::1]:7001'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, SecretStr

if TYPE_CHECKING:
    from redis.cluster import ClusterNode

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS


class ClusterURL(BaseModel):
    """A parsed Redis Cluster URL: its startup nodes, TLS, and the ACL user and password."""

    model_config = ConfigDict(frozen=True)

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: SecretStr | None = None

    def startup_nodes(self) -> list[ClusterNode]:
        """The nodes as ``redis.cluster.RedisCluster(startup_nodes=...)`` takes them."""
        from redis.cluster import ClusterNode

        return [ClusterNode(host, port) for host, port in self.nodes]


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse `url` (see the module docstring); a ValueError says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster:// or rediss+cluster://): {url!r}")
    netloc, _, path = rest.partition("/")
    if "?" in path or "?" in netloc or "#" in rest:
        raise ValueError("a Redis Cluster URL takes no query or fragment")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = SecretStr(unquote(secret)) if colon else None
    nodes = tuple(_host_port(part.strip()) for part in hosts.split(","))
    return ClusterURL(nodes=nodes, tls=SCHEMES[scheme.lower()], username=username, password=password)


def cluster_url(nodes: Iterable[tuple[str, int]], tls: bool = False) -> str:
    """The URL of `nodes` (no credentials: give those as redis_username / redis_password)."""
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)
    return f"{'rediss' if tls else 'redis'}+cluster://{hosts}"


def _host_port(text: str) -> tuple[str, int]:
    if not text:
        raise ValueError("a Redis Cluster URL needs at least one host:port, and no empty entry")
    if text.startswith("["):  # [IPv6]:port
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"bad IPv6 address in a Redis Cluster URL: {text!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = text.partition(":")
        if ":" in port_text:
            raise ValueError(f"write an IPv6 address in brackets: [{text}]")
    if not host:
        raise ValueError(f"missing host in {text!r}")
    if not port_text:
        return host, 6379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)
