"""`eval` on the demo corpus (a BEIR folder) with the real bi-encoder and a tiny cross-encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir, run_eval
from hybrid_rerank.connector.settings import load_settings

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cross_encoder_dir: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RERANK_MODEL", str(tiny_cross_encoder_dir))
    monkeypatch.setenv("RERANK_MAX_LENGTH", "64")
    for name in ("OPENSEARCH_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_every_system_is_scored_and_a_second_run_reuses_the_embeddings(
    settings_env: Path, embedder: Embedder
) -> None:
    settings = load_settings()
    first = run_eval(settings, demo_data_dir(), rerank_depth=5, embedder=embedder)
    assert set(first.systems) == {
        "bm25",
        "dense",
        "hybrid-rrf",
        "hybrid-minmax",
        "hybrid-zscore",
        "hybrid-zscore+rerank@5",
    }
    assert first.queries == 32 and first.rerank_failures == ()
    for metrics in first.systems.values():
        assert set(metrics) == {"ndcg@10", "mrr@10", "recall@100", "hit@1", "hit@10"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert first.systems["hybrid-zscore"]["recall@100"] >= first.systems["bm25"]["recall@100"]
    # Reranking only reorders the top 5: recall@100 cannot change.
    assert (
        first.systems["hybrid-zscore+rerank@5"]["recall@100"] == first.systems["hybrid-zscore"]["recall@100"]
    )
    assert not first.embedding_cache_hit and first.index_built

    second = run_eval(settings, demo_data_dir(), rerank_depth=5, embedder=embedder)
    assert second.embedding_cache_hit and not second.index_built
    assert second.systems == first.systems

    # The file keeps the keys of the reports the README cites, with the values of the run.
    written = first.to_json()
    published = json.loads((RESULTS / "eval-scifact-test.json").read_text(encoding="utf-8"))
    assert list(written) == list(published)
    assert written["rerank_failures"] == [] and written["rerank_weight"] == first.rerank_weight == 1.0
    assert written["systems"] == first.systems and written["queries"] == 32


def test_query_metadata_is_never_read(settings_env: Path, embedder: Embedder) -> None:
    leaky = settings_env / "leaky"
    shutil.copytree(demo_data_dir(), leaky)
    qrels = load_beir(leaky).qrels
    lines = (leaky / "queries.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:  # the answers, where a careless evaluator could find them
        record["metadata"] = {"relevant": sorted(qrels[record["_id"]])}
    (leaky / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    settings = load_settings(rerank_model="none")
    clean = run_eval(settings, demo_data_dir(), embedder=embedder)
    leaked = run_eval(settings, leaky, embedder=embedder)
    assert leaked.systems == clean.systems


def test_a_missing_split_is_a_clear_error(settings_env: Path) -> None:
    from hybrid_rerank.connector.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no qrels for split 'train'"):
        load_beir(demo_data_dir(), "train")


def _chinese_benchmark(folder: Path) -> Path:
    """Three Chinese documents and two Chinese queries, each with one relevant document."""
    folder.mkdir()
    docs = [
        {"_id": "d1", "title": "月亮", "text": "月亮的圆缺变化叫做月相，大约每二十九天循环一次。"},
        {"_id": "d2", "title": "火山", "text": "火山喷发时岩浆从地下涌出，形成新的岩石。"},
        {"_id": "d3", "title": "茶叶", "text": "绿茶不经过发酵，红茶经过完全发酵。"},
    ]
    queries = [{"_id": "q1", "text": "月相变化的周期"}, {"_id": "q2", "text": "红茶发酵"}]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n")
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps(q, ensure_ascii=False) for q in queries) + "\n"
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return folder


def test_the_default_rows_follow_the_language_guard_as_search_does(
    settings_env: Path, embedder: Embedder
) -> None:
    """MiniLM and (here) the reranker read English: Chinese queries keep BM25 alone and are not reranked,
    so the default row is the BM25 row; with the guard off they are fused and reranked."""
    folder = _chinese_benchmark(settings_env / "zh")
    guarded = run_eval(load_settings(rerank_languages="en"), folder, rerank_depth=3, embedder=embedder)
    assert guarded.language_guarded == 2
    assert guarded.systems["hybrid-zscore+rerank@3"] == guarded.systems["bm25"]
    assert "2 queries in a language the models do not read" in str(guarded.table().caption)
    free = run_eval(
        load_settings(rerank_languages="en", language_guard=False), folder, rerank_depth=3, embedder=embedder
    )
    assert free.language_guarded == 0
    assert free.systems["hybrid-zscore+rerank@3"] != free.systems["bm25"]
