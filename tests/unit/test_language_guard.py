"""The language guard in the pipeline: a query the bi-encoder does not read is searched by BM25 alone (it is
not even embedded), one the reranker does not read is not reranked (`rerank_fallback` "language"), both said
in the result and its JSON; English queries take exactly the path they took without the guard. Also the
factory's guard from the settings, the fixed set of fallback codes and the metric that counts them, and the
refusal of an index built under another passage prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import generate_latest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import IndexMismatchError
from hybrid_rerank.connector.factory import make_pipeline
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.language import LanguageGuard, ModelLanguages
from hybrid_rerank.connector.pipeline import PIPELINE_FALLBACK_CODES, SearchOptions, SearchPipeline
from hybrid_rerank.connector.service.metrics import ServiceMetrics
from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.protocol import FALLBACK_CODES
from tests.unit.test_pipeline_assembly import DOCS, RERANK, KeywordEmbedder, TableReranker

# Chinese documents beside the English ones: BM25 (CJK bigrams) ranks them for "月亮" by how often it occurs.
CHINESE = [
    Document("z3", "月亮 月亮 月亮 太阳"),
    Document("z2", "月亮 月亮 太阳 太阳"),
    Document("z1", "月亮 太阳 太阳 太阳"),
]
CHINESE_QUERY = "月亮"
ENGLISH = LanguageGuard(ModelLanguages(("en",)), ModelLanguages(("en",)))
SCORES = RERANK | {"z3": 0.0, "z2": 1.0, "z1": 2.0}


@pytest.fixture
def backend(tmp_path: Path) -> EmbeddedBackend:
    store = EmbeddedBackend(tmp_path, "languages")
    index_documents(store, cast(Embedder, KeywordEmbedder()), [*DOCS, *CHINESE])
    return store


def make(
    backend: EmbeddedBackend, guard: LanguageGuard | None, reranker: TableReranker | None = None
) -> tuple[SearchPipeline, KeywordEmbedder, TableReranker]:
    embedder = KeywordEmbedder()
    reranker = reranker or TableReranker(SCORES)
    options = SearchOptions(rerank_depth=4, top_k=9, fusion="rrf", rrf_k=1)
    return SearchPipeline(backend, cast(Embedder, embedder), reranker, options, guard), embedder, reranker


def test_a_query_no_model_reads_is_bm25_alone_and_not_reranked(backend: EmbeddedBackend) -> None:
    pipeline, embedder, reranker = make(backend, ENGLISH)
    result = pipeline.search(CHINESE_QUERY)
    assert [h.id for h in result.hits] == ["z3", "z2", "z1"]  # BM25's order, nothing from the vector leg
    assert embedder.queries == [] and reranker.requests == []  # neither model was asked
    assert (result.language, result.bm25_only, result.reranked) == ("zh", True, False)
    assert result.rerank_fallback == "language"
    assert result.rerank_note == "the reranker reads en, not zh: not reranked"
    assert result.language_note == (
        "the bi-encoder reads en, not zh: BM25 alone; the reranker reads en, not zh: not reranked"
    )
    assert [(h.bm25_rank, h.vector_rank, h.fused_rank) for h in result.hits] == [
        (1, None, 1),
        (2, None, 2),
        (3, None, 3),
    ]
    assert all(h.score == h.bm25_score == h.fused_score for h in result.hits)  # the raw BM25 score
    assert "embed_query" not in result.timings_ms and {"recall", "bm25", "total"} <= set(result.timings_ms)
    reply = result.to_json()
    assert (reply["language"], reply["bm25_only"], reply["rerank_fallback"]) == ("zh", True, "language")
    assert reply["language_note"] == result.language_note


def test_without_the_guard_the_same_query_is_embedded_fused_and_reranked(backend: EmbeddedBackend) -> None:
    pipeline, embedder, reranker = make(backend, None)
    result = pipeline.search(CHINESE_QUERY)
    assert embedder.queries == [CHINESE_QUERY] and len(reranker.requests) == 1
    assert result.reranked and not result.bm25_only
    assert (result.language, result.language_note, result.rerank_fallback) == (None, None, None)
    assert result.candidates > 3  # the vector leg brought every document in


def test_a_reranker_that_reads_the_language_reranks_the_bm25_pool(backend: EmbeddedBackend) -> None:
    guard = LanguageGuard(ModelLanguages(("en",)), ModelLanguages(("en", "zh")))
    pipeline, embedder, reranker = make(backend, guard)
    result = pipeline.search(CHINESE_QUERY)
    assert embedder.queries == []
    assert [[c.id for c in candidates] for _, candidates in reranker.requests] == [["z3", "z2", "z1"]]
    assert result.reranked and result.bm25_only and result.rerank_fallback is None
    assert [h.id for h in result.hits] == ["z1", "z2", "z3"]  # the table's scores, at weight 1
    assert result.language_note == "the bi-encoder reads en, not zh: BM25 alone"


def test_english_queries_take_the_path_they_took_without_the_guard(backend: EmbeddedBackend) -> None:
    guarded = make(backend, ENGLISH)[0].search("moon")
    plain = make(backend, None)[0].search("moon")
    assert [(h.id, h.score, h.rerank_score) for h in guarded.hits] == [
        (h.id, h.score, h.rerank_score) for h in plain.hits
    ]
    assert guarded.reranked and not guarded.bm25_only and guarded.candidates == plain.candidates
    assert (guarded.language, guarded.language_note, guarded.rerank_fallback) == ("latin", None, None)


def test_search_many_plans_each_query(backend: EmbeddedBackend) -> None:
    pipeline, embedder, reranker = make(backend, ENGLISH)
    chinese, english = pipeline.search_many([CHINESE_QUERY, "moon"])
    assert embedder.queries == ["moon"] and [q for q, _ in reranker.requests] == ["moon"]
    assert (chinese.bm25_only, chinese.rerank_fallback, [h.id for h in chinese.hits]) == (
        True,
        "language",
        ["z3", "z2", "z1"],
    )
    assert english.reranked and not english.bm25_only
    assert [h.id for h in english.hits] == [h.id for h in make(backend, ENGLISH)[0].search("moon").hits]


def test_a_turned_off_rerank_keeps_its_own_code_under_the_guard(backend: EmbeddedBackend) -> None:
    result = make(backend, ENGLISH)[0].search(CHINESE_QUERY, rerank=False)
    assert result.rerank_fallback == "turned_off" and result.bm25_only


def test_the_fallback_codes_are_a_fixed_set_apart_from_the_rerankers() -> None:
    assert PIPELINE_FALLBACK_CODES == (
        "turned_off",
        "no_model",
        "depth_zero",
        "no_candidates",
        "language",
        "missing_scores",
    )
    assert not set(PIPELINE_FALLBACK_CODES) & set(FALLBACK_CODES)


def test_the_service_counts_a_language_skip_as_a_fallback() -> None:
    metrics = ServiceMetrics()
    metrics.observe_rerank("language", 0, 0)
    metrics.observe_rerank("turned_off", 0, 0)  # a client's choice: not counted
    text = generate_latest(metrics.registry).decode()
    assert 'hybrid_rerank_rerank_fallbacks_total{reason="language"} 1.0' in text
    assert 'reason="turned_off"' not in text


def settings(**overrides: Any) -> Any:
    return load_settings(_env_file=None, **overrides)


def test_the_factory_builds_the_guard_from_the_settings_and_model_cards(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("EMBEDDING_LANGUAGES", "RERANK_LANGUAGES", "LANGUAGE_GUARD", "RERANK_KIND", "RERANK_MODEL"):
        monkeypatch.delenv(name, raising=False)
    embedder, reranker = cast(Embedder, KeywordEmbedder()), TableReranker(SCORES)

    def guard(**overrides: Any) -> LanguageGuard | None:
        return make_pipeline(settings(**overrides), backend, embedder, reranker).language_guard

    default = guard()
    assert default == LanguageGuard(
        ModelLanguages(("en",), "model card"), ModelLanguages(("en",), "model card")
    )
    assert guard(language_guard=False) is None
    opened = guard(embedding_languages="*", rerank_languages="en,zh")
    assert opened is not None and opened.embedding.any and opened.rerank.codes == ("en", "zh")
    remote = guard(rerank_kind="remote", rerank_remote_url="http://127.0.0.1:1")
    assert remote is not None and remote.rerank == ModelLanguages()  # a remote API declares nothing
    off = guard(rerank_model="none")
    assert off is not None and off.rerank.any


def test_an_index_built_under_another_passage_prompt_is_refused_by_name(tmp_path: Path) -> None:
    prompted = KeywordEmbedder()
    prompted.model_name = "keyword-embedder (passage prompt 'passage: ')"
    store = EmbeddedBackend(tmp_path, "prompted")
    index_documents(store, cast(Embedder, prompted), DOCS)
    plain = SearchPipeline(store, cast(Embedder, KeywordEmbedder()), None)
    with pytest.raises(IndexMismatchError, match="EMBEDDING_PASSAGE_PROMPT back, or re-index"):
        plain.search("moon")
    assert SearchPipeline(store, cast(Embedder, prompted), None).search("moon").hits
