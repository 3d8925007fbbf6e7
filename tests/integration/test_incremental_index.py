"""Resume and sync through the real command line: `hybrid-rerank index` is SIGKILLed once its first batches
are in the index, then run again; the index ends with exactly the source's documents and the rerun embeds
exactly the documents the killed run had not written. Then a changed source with `--sync`, then `delete`.
On the embedded backend and on a real OpenSearch node."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.errors import HybridRerankError
from tests.service_process import CLI, clean_environment

pytestmark = pytest.mark.integration

DOCUMENTS = 120
BATCH = 6
WORDS = ["moon", "tide", "river", "stone", "forest", "engine", "signal", "harvest", "winter", "copper"]
COUNTS = re.compile(r"embedded (\d+), unchanged (\d+), deleted (\d+)")


def corpus(path: Path, ids: range, changed: frozenset[int] = frozenset()) -> set[str]:
    """Documents of about 60 words (so a batch takes measurable time to embed), nested metadata included."""
    with path.open("w", encoding="utf-8") as handle:
        for i in ids:
            words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(60))
            text = f"document {i} {'revised ' if i in changed else ''}{words}"
            record = {"_id": f"doc-{i:03d}", "text": text, "author": {"name": f"author {i % 4}"}}
            handle.write(json.dumps(record) + "\n")
    return {f"doc-{i:03d}" for i in ids}


class Target:
    """Where the CLI writes (its environment) and how the test reads the index back."""

    def __init__(self, env: dict[str, str], open_backend: Callable[[], Backend]) -> None:
        self.env, self.open_backend = env, open_backend

    def ids(self) -> set[str]:
        return set(self.open_backend().all_ids())


@pytest.fixture(params=["embedded", "opensearch"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    name = f"incremental-{os.getpid()}-{request.param}"
    if request.param == "embedded":
        data_dir = tmp_path / "data"
        yield Target({"DATA_DIR": str(data_dir), "INDEX_NAME": name}, lambda: EmbeddedBackend(data_dir, name))
        return
    from opensearchpy import OpenSearch

    from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend

    url = request.getfixturevalue("opensearch_url")
    client = OpenSearch(hosts=[url], timeout=60)
    client.indices.delete(index=f"{name}-v*", ignore_unavailable=True)

    def open_backend() -> Backend:
        client.indices.refresh(index=f"{name}-v*", ignore_unavailable=True)
        return OpenSearchBackend(client, name, url=url)

    yield Target({"OPENSEARCH_URL": url, "INDEX_NAME": name}, open_backend)
    client.indices.delete(index=f"{name}-v*", ignore_unavailable=True)
    client.close()


def cli(target: Target, cwd: Path, *args: str) -> str:
    """Run the command line to its end; its standard output."""
    done = subprocess.run(
        [str(CLI), *args],
        env=clean_environment(target.env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_index(target: Target, cwd: Path, *args: str) -> tuple[int, int, int]:
    """`index` to its end; the embedded, unchanged and deleted counts of its report."""
    found = COUNTS.search(output := cli(target, cwd, "index", *args))
    assert found, output
    embedded, unchanged, deleted = (int(n) for n in found.groups())
    return embedded, unchanged, deleted


def settled_ids(target: Target) -> set[str]:
    """The index's ids once a bulk request the killed client had sent is no longer landing."""
    previous = None
    while (current := target.ids()) != previous:
        previous = current
        time.sleep(1.0)
    return current


def test_a_killed_run_resumes_without_embedding_twice_then_sync_and_delete(
    target: Target, tmp_path: Path
) -> None:
    source = tmp_path / "corpus.jsonl"
    expected = corpus(source, range(DOCUMENTS))
    command = [str(CLI), "index", str(source), "--batch-size", str(BATCH)]
    killed = subprocess.Popen(
        command,
        env=clean_environment(target.env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    try:
        while True:
            assert killed.poll() is None, (
                "the run ended before it could be killed:\n" + killed.communicate()[0].decode()
            )
            try:
                if len(target.ids()) >= BATCH:  # a first batch is in the index
                    break
            except (HybridRerankError, OSError):  # the index may not exist yet, or be mid-swap
                pass
            assert time.monotonic() < deadline, "no batch was written within 300 s"
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    written = settled_ids(target)
    assert 0 < len(written) < DOCUMENTS and written <= expected

    embedded, unchanged, _ = run_index(target, tmp_path, str(source), "--batch-size", str(BATCH))
    assert target.ids() == expected
    assert (embedded, unchanged) == (DOCUMENTS - len(written), len(written))  # nothing embedded twice

    kept = corpus(source, range(5, DOCUMENTS), changed=frozenset({10, 11, 12}))  # 5 gone, 3 changed
    embedded, unchanged, deleted = run_index(target, tmp_path, str(source), "--sync")
    assert (embedded, unchanged, deleted) == (3, DOCUMENTS - 8, 5)
    assert target.ids() == kept
    revised = target.open_backend().get(["doc-010"])["doc-010"]
    assert "revised" in revised.text and revised.metadata == {"author.name": "author 2"}
    by_author = target.open_backend().bm25("document", DOCUMENTS, {"author.name": "author 1"})
    assert {hit.document.id for hit in by_author} == {i for i in kept if int(i[-3:]) % 4 == 1}

    (tmp_path / "ids.txt").write_text("doc-020\n\n  doc-021  \nnot-there\n")
    deleted_ids = cli(target, tmp_path, "delete", "doc-022", "--ids-file", "ids.txt")
    assert "deleted 3 of 4 ids" in deleted_ids
    assert target.ids() == kept - {"doc-020", "doc-021", "doc-022"}
