"""The testing helpers themselves: a daemon cleans up after itself, whatever happens."""

from __future__ import annotations

import socket

import pytest

from embedq import Client, scope_context
from embedq.testing import Daemon, MockProvider, mock_provider_env
from embedq.testing._redis import _Connection, key_patterns


def redis_keys(prefix: str) -> list[str]:
    conn = _Connection("redis://127.0.0.1:6379", 2.0)
    try:
        keys: list[str] = []
        for pattern in key_patterns(prefix):
            keys.extend(conn.command("KEYS", pattern))
        return keys
    finally:
        conn.close()


def test_stop_removes_the_redis_keys_and_files(mock: MockProvider) -> None:
    daemon = Daemon(mock_provider_env(mock)).start()
    try:
        with Client(daemon.url) as client:
            client.upsert_items("c", [{"id": "a", "content": "text"}])
            job = client.create_job(scope_context("c"))
            client.wait_for_job(job, timeout=20, poll_interval=0.05)
        keys = redis_keys(daemon.prefix)
        assert f"{{{daemon.prefix}}}:jobs" in keys  # the streams exist
    finally:
        code = daemon.stop()
    assert code == 0  # SIGTERM: a clean exit
    assert redis_keys(daemon.prefix) == []
    assert not daemon.workdir.exists()


def test_a_taken_port_is_replaced(mock: MockProvider) -> None:
    daemon = Daemon(mock_provider_env(mock))
    taken = daemon.port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        daemon.start()
        try:
            assert daemon.port != taken
            with Client(daemon.url) as client:
                assert client.health().status == "ok"
        finally:
            daemon.stop()


def test_a_failed_start_leaves_nothing_behind() -> None:
    daemon = Daemon({"EMBEDQ__PLANNER__PAGE_SIZE": "0"})  # refused by the daemon's settings
    with pytest.raises(RuntimeError, match=r"planner\.page_size"):
        daemon.start()
    assert not daemon.workdir.exists()
    assert redis_keys(daemon.prefix) == []


def test_a_config_file_is_read_and_removed_with_the_daemon(mock: MockProvider) -> None:
    refused = Daemon(mock_provider_env(mock), config="[planner]\npage_size = 0\n")
    assert (refused.workdir / "embedq.toml").read_text() == "[planner]\npage_size = 0\n"
    with pytest.raises(RuntimeError, match=r"planner\.page_size"):  # the file was read
        refused.start()
    assert not refused.workdir.exists()
    # The variables win over the file.
    env = {"EMBEDQ__PLANNER__PAGE_SIZE": "100"}
    config = "[planner]\npage_size = 0\n"
    with Daemon(mock_provider_env(mock), config=config, env=env) as daemon, Client(daemon.url) as c:
        assert c.health().status == "ok"
