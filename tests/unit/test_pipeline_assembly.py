"""The pipeline's assembly and paging with hand-computed expectations, in milliseconds per test: the embedded
backend, a small deterministic in-memory bi-encoder and rerankers with known scores (no model loads).

The corpus, query "moon" (every document four words, so BM25 orders them by how often "moon" occurs):

    id   text                       BM25 rank   cosine (query axis moon)   vector rank
    m3   moon moon moon sun         1           3/sqrt(10) = 0.9487        2
    m2   moon moon sun sun          2           2/sqrt(8)  = 0.7071        3
    m1   moon sun sun sun           3           1/sqrt(10) = 0.3162        4
    l4   lunar lunar lunar lunar    -           1                          1   (lunar shares moon's axis)
    s4   sun sun sun sun            -           0                          5   (ties by id)
    t4   star star star star        -           0                          6

RRF with k = 1 (score = sum of 1 / (1 + rank)): m3 1/2 + 1/3 = 5/6, m2 1/3 + 1/4 = 7/12, l4 1/2,
m1 1/4 + 1/5 = 9/20, s4 1/6, t4 1/7: the first stage is m3, m2, l4, m1, s4, t4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pytest

from hybrid_rerank.connector import pipeline as pipeline_module
from hybrid_rerank.connector.backends.base import Filters, HybridHit, IndexInfo, Vector
from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder, ProgressCallback
from hybrid_rerank.connector.errors import IndexMismatchError, IndexMissingError, InvalidQueryError
from hybrid_rerank.connector.fusion import FusionMethod
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import Hit, SearchOptions, SearchPipeline, SearchResult, hit_json
from hybrid_rerank.connector.stages import FusionOptions, fuse_recall
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome

DOCS = [
    Document("m3", "moon moon moon sun", metadata={"sky": "night"}),
    Document("m2", "moon moon sun sun", metadata={"sky": "night"}),
    Document("m1", "moon sun sun sun", metadata={"sky": "day"}),
    Document("l4", "lunar lunar lunar lunar", metadata={"sky": "night"}),
    Document("s4", "sun sun sun sun", metadata={"sky": "day"}),
    Document("t4", "star star star star", metadata={"sky": "space"}),
]
FIRST_STAGE = ["m3", "m2", "l4", "m1", "s4", "t4"]
FUSED = {"m3": 5 / 6, "m2": 7 / 12, "l4": 1 / 2, "m1": 9 / 20, "s4": 1 / 6, "t4": 1 / 7}
COSINE = {"m3": 3 / math.sqrt(10), "m2": 2 / math.sqrt(8), "l4": 1.0, "m1": 1 / math.sqrt(10), "s4": 0.0}
COSINE["t4"] = 0.0
RERANK = {"m3": 0.0, "m2": 1.0, "l4": 3.0, "m1": 2.0, "s4": 5.0, "t4": 4.0}
# The head (top 4) at weight 0.4, w * z(rerank) + (1 - w) * z(fused):
#   fused 5/6, 7/12, 1/2, 9/20: mean 0.591667, population std 0.147432,
#     z = 1.639184, -0.056524, -0.621762, -0.960898
#   rerank 0, 1, 3, 2: mean 1.5, std sqrt(1.25) = 1.118034, z = -1.341641, -0.447214, 1.341641, 0.447214
#   m3 0.4 * -1.341641 + 0.6 * 1.639184 = 0.446854;  m2 -0.178885 - 0.033914 = -0.212800
#   l4 0.536656 - 0.373057 = 0.163599;               m1 0.178886 - 0.576539 = -0.397653
# so m3, l4, m2, m1, then the tail in first-stage order (s4, t4 keep their fused scores).
AT_04 = {"m3": 0.446854, "l4": 0.163599, "m2": -0.212800, "m1": -0.397653}
ORDER_AT_04 = ["m3", "l4", "m2", "m1", "s4", "t4"]


class KeywordEmbedder:
    """A deterministic in-memory bi-encoder with what the pipeline and indexing use (`model_name`,
    `dimension`, `embed_query`, `embed_documents`): counts of a few keywords, L2-normalized; "moon" and
    "lunar" share an axis, as synonyms would. Text with none of them points along the fourth axis."""

    model_name = "keyword-embedder"
    dimension = 4
    AXES: Mapping[str, int] = {"moon": 0, "lunar": 0, "sun": 1, "star": 2}

    def __init__(self) -> None:
        self.queries: list[str] = []

    def _vector(self, text: str) -> Vector:
        counts = np.zeros(self.dimension, dtype=np.float32)
        for word in text.lower().split():
            if word in self.AXES:
                counts[self.AXES[word]] += 1.0
        if not counts.any():
            counts[3] = 1.0
        return cast(Vector, counts / np.linalg.norm(counts))

    def embed_query(self, query: str) -> Vector:
        self.queries.append(query)
        return self._vector(query)

    def embed_documents(
        self, documents: Sequence[Document], progress: ProgressCallback | None = None
    ) -> Vector:
        return np.stack([self._vector(d.full_text) for d in documents]).astype(np.float32)


class TableReranker(Reranker):
    """Scores from a table, recording what it was asked; `tuned_weight` travels in its outcome as a worker's
    reply carries it. Ids in `leave_out` get no score, as a broken worker's reply would."""

    description = "table"

    def __init__(
        self, scores: Mapping[str, float], tuned_weight: float | None = None, leave_out: Sequence[str] = ()
    ) -> None:
        self.scores = dict(scores)
        self.tuned_weight = tuned_weight
        self.leave_out = set(leave_out)
        self.requests: list[tuple[str, list[Candidate]]] = []
        self.deadlines: list[int | None] = []

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        self.requests.append((query, list(candidates)))
        self.deadlines.append(deadline_ms)
        scores = {c.id: self.scores[c.id] for c in candidates if c.id not in self.leave_out}
        return RerankOutcome(scores, model="table", interpolation_weight=self.tuned_weight)


class FailedReranker(Reranker):
    description = "failed"

    def __init__(self, outcome: RerankOutcome) -> None:
        self.outcome = outcome

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        return self.outcome


class CountingBackend(EmbeddedBackend):
    """The embedded backend, counting how often the pipeline asks for the index's build information."""

    def __init__(self, data_dir: Path, index_name: str) -> None:
        super().__init__(data_dir, index_name)
        self.info_calls = 0

    def index_info(self) -> IndexInfo | None:
        self.info_calls += 1
        return super().index_info()


class ServerFusingBackend(EmbeddedBackend):
    """The embedded backend with a server-side `hybrid`: it fuses its own recall legs as the client would,
    so HYBRID_MODE=server must rank exactly as client mode. Records each call's arguments."""

    def __init__(self, data_dir: Path, index_name: str) -> None:
        super().__init__(data_dir, index_name)
        self.calls: list[dict[str, Any]] = []

    def hybrid(
        self,
        query: str,
        vector: Vector,
        size: int,
        filters: Filters | None,
        *,
        fusion: FusionMethod,
        bm25_weight: float,
        rrf_k: int,
        texts: bool = True,
    ) -> list[HybridHit]:
        self.calls.append(
            {
                "query": query,
                "vector": vector.tolist(),
                "size": size,
                "filters": filters,
                "fusion": fusion,
                "bm25_weight": bm25_weight,
                "rrf_k": rrf_k,
                "texts": texts,
            }
        )
        pool = fuse_recall(
            self.recall(query, vector, size, filters, texts=texts), FusionOptions(fusion, rrf_k, bm25_weight)
        )
        return [HybridHit(e.document, e.fused_score, e.bm25[1], e.vector[1]) for e in pool]


class FakeClock:
    """`time` for the pipeline module: each perf_counter() call is one second after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


B = TypeVar("B", bound=EmbeddedBackend)


def indexed(backend: B) -> B:
    report = index_documents(backend, cast(Embedder, KeywordEmbedder()), DOCS)
    assert report.bulk.written == len(DOCS)
    return backend


@pytest.fixture
def backend(tmp_path: Path) -> EmbeddedBackend:
    return indexed(EmbeddedBackend(tmp_path, "assembly"))


def make(backend: EmbeddedBackend, reranker: Reranker | None = None, **options: Any) -> SearchPipeline:
    settings: dict[str, Any] = {"rerank_depth": 4, "top_k": 6, "fusion": "rrf", "rrf_k": 1} | options
    return SearchPipeline(backend, cast(Embedder, KeywordEmbedder()), reranker, SearchOptions(**settings))


def ids(result: SearchResult) -> list[str]:
    return [h.id for h in result.hits]


def scores(result: SearchResult) -> dict[str, float]:
    return {h.id: h.score for h in result.hits}


def test_the_first_stage_is_the_hand_computed_fusion_of_both_legs(backend: EmbeddedBackend) -> None:
    result = make(backend, TableReranker(RERANK)).search("moon", rerank=False)
    assert ids(result) == FIRST_STAGE
    assert (result.query, result.reranked, result.candidates) == ("moon", False, 6)
    assert result.rerank_note == "reranking turned off for this query"
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5, 6]
    assert [h.fused_rank for h in result.hits] == [1, 2, 3, 4, 5, 6]
    assert scores(result) == pytest.approx(FUSED)  # not reranked: the score is the fused score
    assert {h.id: h.fused_score for h in result.hits} == pytest.approx(FUSED)
    assert [h.bm25_rank for h in result.hits] == [1, 2, None, 3, None, None]
    assert [h.vector_rank for h in result.hits] == [2, 3, 1, 4, 5, 6]
    assert {h.id: h.vector_score for h in result.hits} == pytest.approx(COSINE, abs=1e-6)
    bm25 = [h.bm25_score for h in result.hits]
    assert bm25[2] is None and bm25[4] is None and bm25[5] is None
    assert bm25[0] > bm25[1] > bm25[3] > 0  # type: ignore[operator]
    assert all(h.rerank_score is None for h in result.hits)
    assert [h.document for h in result.hits] == [next(d for d in DOCS if d.id == i) for i in FIRST_STAGE]


def test_at_weight_one_the_head_takes_the_rerank_order_and_the_tail_stays(backend: EmbeddedBackend) -> None:
    reranker = TableReranker(RERANK)
    result = make(backend, reranker, rerank_weight=1.0).search("moon")
    assert result.reranked and result.rerank_note is None
    assert ids(result) == ["l4", "m1", "m2", "m3", "s4", "t4"]
    assert scores(result) == pytest.approx({"l4": 3.0, "m1": 2.0, "m2": 1.0, "m3": 0.0, **_tail()})
    assert [h.rerank_score for h in result.hits] == [3.0, 2.0, 1.0, 0.0, None, None]
    assert [h.fused_rank for h in result.hits] == [3, 4, 2, 1, 5, 6]
    # The reranker read the top 4 of the first stage, each as title-then-text (here the text alone).
    ((query, candidates),) = reranker.requests
    assert query == "moon"
    assert candidates == [Candidate(i, next(d.full_text for d in DOCS if d.id == i)) for i in FIRST_STAGE[:4]]


def _tail() -> dict[str, float]:
    return {"s4": FUSED["s4"], "t4": FUSED["t4"]}


def test_the_models_tuned_weight_interpolates_with_the_fused_score(backend: EmbeddedBackend) -> None:
    result = make(backend, TableReranker(RERANK, tuned_weight=0.4)).search("moon")
    assert ids(result) == ORDER_AT_04
    assert scores(result) == pytest.approx(AT_04 | _tail(), abs=1e-5)
    assert [h.rerank_score for h in result.hits] == [0.0, 3.0, 1.0, 2.0, None, None]
    # The setting overrides the model's weight: 0 is the first stage, with the rerank scores still shown.
    kept = make(backend, TableReranker(RERANK, tuned_weight=0.4), rerank_weight=0.0).search("moon")
    assert ids(kept) == FIRST_STAGE and kept.reranked
    assert [h.rerank_score for h in kept.hits] == [0.0, 1.0, 3.0, 2.0, None, None]
    # Without a tuned weight and without the setting: the rerank order alone.
    alone = make(backend, TableReranker(RERANK)).search("moon")
    assert ids(alone) == ["l4", "m1", "m2", "m3", "s4", "t4"]


def test_pages_with_rerank_on_continue_where_the_last_ended(backend: EmbeddedBackend) -> None:
    reranker = TableReranker(RERANK, tuned_weight=0.4)
    pipeline = make(backend, reranker)
    pages = [pipeline.search("moon", k=2, offset=offset) for offset in (0, 2, 4)]
    assert [ids(p) for p in pages] == [ORDER_AT_04[0:2], ORDER_AT_04[2:4], ORDER_AT_04[4:6]]
    assert [[h.rank for h in p.hits] for p in pages] == [[1, 2], [3, 4], [5, 6]]
    assert all(p.reranked and p.candidates == 6 for p in pages)
    assert pages[1].hits[0].score == pytest.approx(AT_04["m2"], abs=1e-5)
    # Every page reranked the same head: the page does not change what is ranked.
    assert [[c.id for c in cs] for _, cs in reranker.requests] == [FIRST_STAGE[:4]] * 3
    odd = pipeline.search("moon", k=3, offset=1)
    assert ids(odd) == ORDER_AT_04[1:4] and [h.rank for h in odd.hits] == [2, 3, 4]
    past_the_end = pipeline.search("moon", k=2, offset=6)
    assert past_the_end.hits == [] and past_the_end.candidates == 6


def test_k_defaults_to_the_setting_and_a_pipeline_without_options_uses_the_defaults(
    backend: EmbeddedBackend,
) -> None:
    assert ids(make(backend, top_k=3).search("moon", rerank=False)) == FIRST_STAGE[:3]
    assert ids(make(backend, top_k=3).search("moon", k=1, rerank=False)) == ["m3"]
    default = SearchPipeline(backend, cast(Embedder, KeywordEmbedder()), TableReranker(RERANK))
    assert default.options == SearchOptions()
    result = default.search("moon")  # top_k 10 > 6 documents; rerank depth 30 reads them all
    assert result.reranked and ids(result) == ["s4", "t4", "l4", "m1", "m2", "m3"]


def test_why_a_result_is_not_reranked(backend: EmbeddedBackend) -> None:
    no_model = make(backend, None).search("moon")
    assert no_model.rerank_note == "no rerank model configured (RERANK_MODEL is off)"
    assert no_model.rerank_fallback == "no_model"
    off = make(backend, TableReranker(RERANK), rerank_depth=0).search("moon")
    assert (off.reranked, off.rerank_note, ids(off)) == (False, "RERANK_DEPTH is 0", FIRST_STAGE)
    assert off.rerank_fallback == "depth_zero"
    nothing = make(backend, TableReranker(RERANK)).search("moon", filters={"sky": "nowhere"})
    assert (nothing.reranked, nothing.rerank_note, nothing.hits) == (False, "no candidates to rerank", [])
    assert nothing.candidates == 0 and nothing.rerank_fallback == "no_candidates"
    asked_off = make(backend, TableReranker(RERANK)).search("moon", rerank=False)
    assert (asked_off.rerank_fallback, asked_off.rerank_note) == (
        "turned_off",
        "reranking turned off for this query",
    )
    done = make(backend, TableReranker(RERANK)).search("moon")
    assert done.reranked and done.rerank_fallback is None and done.rerank_note is None


def test_the_deadline_of_one_search_reaches_the_reranker(backend: EmbeddedBackend) -> None:
    reranker = TableReranker(RERANK)
    pipeline = make(backend, reranker)
    pipeline.search("moon", deadline_ms=250)
    pipeline.search("moon")
    assert reranker.deadlines == [250, None]


def test_the_first_stage_page_sits_beside_the_reranked_one(backend: EmbeddedBackend) -> None:
    result = make(backend, TableReranker(RERANK), rerank_weight=1.0).search("moon", k=3, offset=1)
    assert [h.id for h in result.first_stage] == FIRST_STAGE[1:4]
    assert [h.rank for h in result.first_stage] == [2, 3, 4]
    assert [h.score for h in result.first_stage] == pytest.approx([FUSED[i] for i in FIRST_STAGE[1:4]])
    assert [h.rerank_score for h in result.first_stage] == [RERANK[i] for i in FIRST_STAGE[1:4]]
    assert ids(result) != [h.id for h in result.first_stage]
    assert result.to_json(include_first_stage=True)["first_stage"] == [
        hit_json(h) for h in result.first_stage
    ]
    assert "first_stage" not in result.to_json()


def test_a_head_of_one_and_a_pool_of_one_are_reranked(backend: EmbeddedBackend) -> None:
    one_deep = make(backend, TableReranker(RERANK), rerank_weight=1.0, rerank_depth=1).search("moon")
    assert one_deep.reranked and ids(one_deep) == FIRST_STAGE
    assert [h.rerank_score for h in one_deep.hits] == [0.0, None, None, None, None, None]
    assert [h.score for h in one_deep.hits] == pytest.approx([0.0, *(FUSED[i] for i in FIRST_STAGE[1:])])
    alone = make(backend, TableReranker(RERANK), rerank_weight=1.0).search("moon", filters={"sky": "space"})
    assert alone.reranked and ids(alone) == ["t4"] and alone.hits[0].score == 4.0


def test_filters_hold_for_the_pool_and_every_hit(backend: EmbeddedBackend) -> None:
    result = make(backend, TableReranker(RERANK), rerank_weight=1.0).search("moon", filters={"sky": "day"})
    # m1: BM25 rank 1, vector rank 1 (cosine 0.316 > 0): 1/2 + 1/2; s4: vector rank 2 only: 1/3.
    assert result.candidates == 2 and ids(result) == ["s4", "m1"]
    assert {h.id: h.fused_score for h in result.hits} == pytest.approx({"m1": 1.0, "s4": 1 / 3})


def test_the_recall_depth_bounds_each_leg(backend: EmbeddedBackend) -> None:
    # N = 3: BM25 m3, m2, m1; vector l4, m3, m2. RRF k = 1: m3 1/2 + 1/3, m2 1/3 + 1/4, l4 1/2, m1 1/4.
    result = make(backend, recall_depth=3).search("moon", rerank=False)
    assert result.candidates == 4 and ids(result) == ["m3", "m2", "l4", "m1"]
    assert [h.fused_score for h in result.hits] == pytest.approx([5 / 6, 7 / 12, 1 / 2, 1 / 4])


@pytest.mark.parametrize(
    ("outcome", "note", "code"),
    [
        (
            RerankOutcome.failed("rerank workers are down", "broker_unreachable"),
            "rerank workers are down",
            "broker_unreachable",
        ),
        (RerankOutcome.failed("late", "deadline"), "late", "deadline"),
        (RerankOutcome(None), "reranker returned no scores", "failed"),
    ],
)
def test_a_failed_rerank_keeps_the_first_stage_and_says_why(
    backend: EmbeddedBackend, outcome: RerankOutcome, note: str, code: str
) -> None:
    result = make(backend, FailedReranker(outcome)).search("moon", k=3)
    assert (result.reranked, result.rerank_note, ids(result)) == (False, note, FIRST_STAGE[:3])
    assert result.rerank_fallback == code
    assert scores(result) == pytest.approx({i: FUSED[i] for i in FIRST_STAGE[:3]})
    assert [h.rerank_score for h in result.hits] == [None, None, None]


def test_a_reply_missing_a_head_score_is_not_used(backend: EmbeddedBackend) -> None:
    result = make(backend, TableReranker(RERANK, leave_out=["l4"])).search("moon")
    assert not result.reranked
    assert result.rerank_note == "the reranker returned no score for 1 candidate(s), e.g. 'l4'"
    assert result.rerank_fallback == "missing_scores"
    assert ids(result) == FIRST_STAGE and all(h.rerank_score is None for h in result.hits)
    two = make(backend, TableReranker(RERANK, leave_out=["m2", "m1"])).search("moon")
    assert two.rerank_note == "the reranker returned no score for 2 candidate(s), e.g. 'm2'"


def test_each_stage_is_timed_in_milliseconds(
    backend: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every perf_counter() call of the pipeline is one second later: start, then two calls per stage.
    monkeypatch.setattr(pipeline_module, "time", FakeClock())
    result = make(backend, TableReranker(RERANK)).search("moon")
    legs = {name: result.timings_ms[name] for name in ("bm25", "knn")}  # the backend's own clock
    assert all(ms >= 0 for ms in legs.values())
    assert {k: v for k, v in result.timings_ms.items() if k not in legs} == {
        "embed_query": 1000.0,
        "recall": 1000.0,
        "fusion": 1000.0,
        "rerank": 1000.0,
        "total": 9000.0,
    }
    off = make(backend, TableReranker(RERANK)).search("moon", rerank=False)
    assert {k: v for k, v in off.timings_ms.items() if k not in legs} == {
        "embed_query": 1000.0,
        "recall": 1000.0,
        "fusion": 1000.0,
        "total": 7000.0,
    }


def test_the_index_is_checked_once_and_must_match_the_embedder(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError) as missing:
        make(EmbeddedBackend(tmp_path, "absent")).search("moon")
    assert str(missing.value) == "the index does not exist yet; run `hybrid-rerank index PATH` first"
    other = EmbeddedBackend(tmp_path, "other")
    other.create_index("some-other-model", KeywordEmbedder.dimension)
    with pytest.raises(IndexMismatchError, match="'some-other-model'"):
        make(other).search("moon")
    wider = EmbeddedBackend(tmp_path, "wider")
    wider.create_index(KeywordEmbedder.model_name, 8)
    with pytest.raises(IndexMismatchError, match="8-dimensional"):
        make(wider).search("moon")
    counting = indexed(CountingBackend(tmp_path, "counting"))
    pipeline = make(counting)
    for _ in range(3):
        assert ids(pipeline.search("moon", rerank=False)) == FIRST_STAGE
    assert counting.info_calls == 1


@pytest.mark.parametrize(
    ("query", "k", "offset", "message"),
    [
        ("  ", 3, 0, "the query is empty"),
        ("moon", 0, 0, "k must be positive and offset non-negative, got k=0, offset=0"),
        ("moon", -1, 0, "k must be positive and offset non-negative, got k=-1, offset=0"),
        ("moon", 3, -1, "k must be positive and offset non-negative, got k=3, offset=-1"),
    ],
)
def test_bad_queries_are_refused_before_any_work(
    backend: EmbeddedBackend, query: str, k: int, offset: int, message: str
) -> None:
    embedder = KeywordEmbedder()
    pipeline = SearchPipeline(backend, cast(Embedder, embedder), None, SearchOptions(top_k=3))
    with pytest.raises(InvalidQueryError) as refused:
        pipeline.search(query, k=k, offset=offset)
    assert str(refused.value) == message
    assert embedder.queries == []


def test_the_smallest_page_is_one_hit_at_offset_zero(backend: EmbeddedBackend) -> None:
    result = make(backend).search("moon", k=1, offset=0, rerank=False)
    assert ids(result) == ["m3"] and result.hits[0].rank == 1


def test_search_many_reranks_in_one_batch_as_single_searches_would(backend: EmbeddedBackend) -> None:
    reranker = TableReranker(RERANK, tuned_weight=0.4)
    pipeline = make(backend, reranker)
    progress: list[tuple[int, int]] = []
    results = pipeline.search_many(
        ["moon", "sun"], k=4, progress=lambda done, total: progress.append((done, total))
    )
    assert progress == [(1, 2), (2, 2)]
    singles = [make(backend, TableReranker(RERANK, tuned_weight=0.4)).search(q, k=4) for q in ("moon", "sun")]
    assert [r.query for r in results] == ["moon", "sun"]
    assert [ids(r) for r in results] == [ids(s) for s in singles]
    assert ids(results[0]) == ORDER_AT_04[:4] and [h.rank for h in results[0].hits] == [1, 2, 3, 4]
    assert [scores(r) for r in results] == [pytest.approx(scores(s)) for s in singles]
    assert all(r.reranked and r.candidates == 6 for r in results)
    assert [q for q, _ in reranker.requests] == ["moon", "sun"]
    assert set(results[0].timings_ms) == {"embed_query", "recall", "bm25", "knn", "fusion", "total"}


def test_search_many_without_reranking_and_with_a_bad_k(backend: EmbeddedBackend) -> None:
    reranker = TableReranker(RERANK)
    results = make(backend, reranker).search_many(["moon", "star"], rerank=False)
    assert reranker.requests == []
    assert ids(results[0]) == FIRST_STAGE and results[0].rerank_note == "reranking turned off for this query"
    assert all(not r.reranked for r in results)
    assert ids(make(backend, top_k=2).search_many(["moon"])[0]) == FIRST_STAGE[:2]
    with pytest.raises(InvalidQueryError) as refused:
        make(backend).search_many(["moon"], k=0)
    assert str(refused.value) == "k must be positive and offset non-negative, got k=0, offset=0"


@pytest.mark.parametrize(
    ("fusion", "bm25_weight", "rrf_k"), [("rrf", 0.5, 1), ("minmax", 0.25, 60), ("zscore", 0.75, 60)]
)
def test_server_mode_hands_the_fusion_to_the_store_and_ranks_as_client_mode(
    tmp_path: Path, fusion: str, bm25_weight: float, rrf_k: int
) -> None:
    store = indexed(ServerFusingBackend(tmp_path, "server"))
    options = {"fusion": fusion, "bm25_weight": bm25_weight, "rrf_k": rrf_k, "recall_depth": 5}
    filters: Filters = {"sky": ["night", "day"]}
    server = make(store, TableReranker(RERANK), hybrid_mode="server", **options).search(
        "moon", filters=filters, rerank=False
    )
    client = make(store, TableReranker(RERANK), **options).search("moon", filters=filters, rerank=False)
    assert store.calls == [
        {
            "query": "moon",
            "vector": [1.0, 0.0, 0.0, 0.0],
            "size": 5,
            "filters": filters,
            "fusion": fusion,
            "bm25_weight": bm25_weight,
            "rrf_k": rrf_k,
            "texts": True,  # the legs bring the texts (RECALL_TEXTS=legs, the default)
        }
    ]
    assert ids(server) == ids(client) and "t4" not in ids(server)
    assert scores(server) == pytest.approx(scores(client))
    assert [h.fused_rank for h in server.hits] == list(range(1, len(server.hits) + 1))
    assert [(h.bm25_score, h.vector_score) for h in server.hits] == [
        (h.bm25_score, h.vector_score) for h in client.hits
    ]
    assert all(h.bm25_rank is None and h.vector_rank is None for h in server.hits)  # a server has no ranks
    assert set(server.timings_ms) == {"embed_query", "recall", "total"}


def test_the_json_form_holds_every_stage() -> None:
    document = Document("d", "body", "Title", {"k": "v"})
    hit = Hit(
        rank=1,
        document=document,
        score=0.5,
        fused_score=0.25,
        bm25_score=3.0,
        vector_score=0.75,
        rerank_score=1.5,
        bm25_rank=2,
        vector_rank=1,
        fused_rank=1,
    )
    result = SearchResult("q", [hit], True, None, {"recall": 1.23456, "total": 2.0004}, candidates=7)
    assert result.to_json() == {
        "query": "q",
        "reranked": True,
        "rerank_note": None,
        "rerank_fallback": None,
        "timings_ms": {"recall": 1.235, "total": 2.0},
        "candidates": 7,
        "language": None,
        "bm25_only": False,
        "language_note": None,
        "domain_note": None,
        "hits": [
            {
                "rank": 1,
                "id": "d",
                "title": "Title",
                "text": "body",
                "metadata": {"k": "v"},
                "score": 0.5,
                "scores": {"bm25": 3.0, "vector": 0.75, "fused": 0.25, "rerank": 1.5},
                "ranks": {"bm25": 2, "vector": 1, "fused": 1},
            }
        ],
    }


class ShortReranker(TableReranker):
    """A broken batch reranker: it loses the last reply of a batch."""

    def rerank_many(
        self,
        requests: Sequence[tuple[str, Sequence[Candidate]]],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[RerankOutcome]:
        return [self.rerank(query, candidates) for query, candidates in requests][:-1]


def test_search_many_applies_the_filters_and_skips_an_empty_pool(backend: EmbeddedBackend) -> None:
    reranker = TableReranker(RERANK)
    day = make(backend, reranker, rerank_weight=1.0).search_many(["moon"], filters={"sky": "day"})
    assert ids(day[0]) == ["s4", "m1"] and day[0].reranked  # as the single search above
    nothing = make(backend, reranker).search_many(["moon", "sun"], filters={"sky": "nowhere"})
    assert [(r.hits, r.reranked, r.rerank_note) for r in nothing] == [
        ([], False, "no candidates to rerank")
    ] * 2
    assert [q for q, _ in reranker.requests] == ["moon"]  # the empty pools were never sent


def test_search_many_fails_loudly_when_a_reranker_loses_a_reply(backend: EmbeddedBackend) -> None:
    # Otherwise the last query would claim to be reranked without any rerank score.
    with pytest.raises(ValueError):
        make(backend, ShortReranker(RERANK)).search_many(["moon", "sun"])
