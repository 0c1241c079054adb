"""The ordered pipeline's own RESP packer writes what redis-py's would (the pipeline's behaviour
against a real Redis is in the broker contract suite)."""

from __future__ import annotations

from redis.asyncio.connection import Connection

from push_service.broker.redis_pipeline import pack


def test_pack_is_byte_identical_to_redis_py():
    commands = [("EVALSHA", "a" * 40, 5, "push:h2:t", b"\xff\x00bytes", "é", 0, -3, 4194304, "", b""),
                ("SCRIPT", "LOAD", "return 1"), ("GET", "x" * 70_000)]
    assert pack(commands) == b"".join(Connection().pack_commands(commands))
