"""Redis Cluster URLs (`driftline.redis_cluster`): startup nodes, TLS and credentials."""

from __future__ import annotations

import pytest
from redis.cluster import ClusterNode

from driftline.redis_cluster import cluster_url, is_cluster_url, parse_cluster_url


def test_nodes_in_order_with_default_port_and_ipv6() -> None:
    u = parse_cluster_url("redis+cluster://10.0.0.1:7000, redis-b ,[::1]:7002")
    assert u.nodes == (("10.0.0.1", 7000), ("redis-b", 6379), ("::1", 7002))
    assert not u.tls and u.username is None and u.password is None
    startup = u.startup_nodes()
    assert all(isinstance(n, ClusterNode) for n in startup)
    assert [(n.host, n.port) for n in startup] == [("10.0.0.1", 7000), ("redis-b", 6379), ("::1", 7002)]


def test_tls_scheme_and_credentials_are_read_and_the_password_kept_secret() -> None:
    u = parse_cluster_url("rediss+cluster://worker:p%40ss%3Aw0rd@h1:7000,h2:7001/0")
    assert u.tls and u.nodes == (("h1", 7000), ("h2", 7001))
    assert u.username == "worker"
    assert u.password is not None and u.password.get_secret_value() == "p@ss:w0rd"
    assert "p@ss" not in repr(u)
    only_password = parse_cluster_url("redis+cluster://:secret@h1:7000")
    assert only_password.username is None and only_password.password is not None


def test_cluster_url_round_trips() -> None:
    nodes = [("127.0.0.1", 7000), ("127.0.0.1", 7001), ("fe80::1", 7002)]
    for tls in (False, True):
        url = cluster_url(nodes, tls=tls)
        assert is_cluster_url(url)
        assert parse_cluster_url(url).nodes == tuple(nodes) and parse_cluster_url(url).tls is tls


def test_plain_urls_are_not_cluster_urls() -> None:
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert not is_cluster_url("rediss://h:6380")
    assert is_cluster_url("REDIS+CLUSTER://h:7000")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:7000", "not a Redis Cluster URL"),
        ("h:7000,h:7001", "not a Redis Cluster URL"),
        ("redis+cluster://h:7000/1", "only database 0"),
        ("redis+cluster://h:7000?timeout=1", "no query"),
        ("redis+cluster://h:7000,,h:7001", "no empty entry"),
        ("redis+cluster://", "at least one host:port"),
        ("redis+cluster://h:port", "bad port"),
        ("redis+cluster://h:70000", "bad port"),
        ("redis+cluster://:7000", "missing host"),
        ("redis+cluster://::1:7000", "in brackets"),
        ("redis+cluster://[::1:7000", "bad IPv6"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)
