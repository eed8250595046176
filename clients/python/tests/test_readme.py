"""The README's examples run as written (against a test daemon, through EMBEDQ_URL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedq import Client, NotFoundError
from embedq.testing import Daemon

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_five_line_script_runs(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = python_blocks()[0]
    assert len(script.strip().splitlines()) == 5
    monkeypatch.setenv("EMBEDQ_URL", daemon.url)
    monkeypatch.delenv("EMBEDQ_ADMIN_TOKEN", raising=False)
    exec(compile(script, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("COMPLETED ") and "item_id='a1'" in out


def test_the_async_example_runs(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = next(b for b in python_blocks() if "AsyncClient" in b)
    monkeypatch.setenv("EMBEDQ_URL", daemon.url)
    exec(compile(script, "README.md", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] in ("COMPLETED 1 0", "COMPLETED 0 1")  # a1 embedded now, or already


def test_the_metadata_dry_run_and_reconcile_example_runs(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = next(b for b in python_blocks() if "create_reconcile_job" in b)
    monkeypatch.setenv("EMBEDQ_URL", daemon.url)
    monkeypatch.delenv("EMBEDQ_ADMIN_TOKEN", raising=False)
    exec(compile(script, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["2 items to embed", "['m2']"]
    assert lines[2].startswith("points_scanned=") and "orphans_deleted=0" in lines[2]
    with Client(daemon.url, token="") as client:
        assert client.search("manuals", "security settings", k=3).item_ids == ["m1"]
        assert client.get_item("m1").metadata == {"lang": "en"}


def test_the_schedules_example_runs(
    scheduled_daemon: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = next(b for b in python_blocks() if ".schedules(" in b)
    monkeypatch.setenv("EMBEDQ_URL", scheduled_daemon.url)
    monkeypatch.delenv("EMBEDQ_ADMIN_TOKEN", raising=False)
    exec(compile(script, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" [")[0] for line in lines] == [
        "every-second * * * * * * embed",
        "purge * * * * * * purge_dead_letters",
        "nightly-reconcile 0 0 3 * * * reconcile",
    ]


def test_the_documents_example_runs(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = next(b for b in python_blocks() if ".ingest_document(" in b)
    monkeypatch.setenv("EMBEDQ_URL", daemon.url)
    monkeypatch.delenv("EMBEDQ_ADMIN_TOKEN", raising=False)
    exec(compile(script, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == [
        "markdown 2 2 ['guide#0', 'guide#1']",
        "['Guide', 'Use']",
        "2 chunks deleted",
    ]
    with Client(daemon.url, token="") as client, pytest.raises(NotFoundError):
        client.get_item("guide#0")
