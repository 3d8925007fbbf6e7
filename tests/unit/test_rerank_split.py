"""The rerank client without workers: a large request split into tasks and merged all or nothing, the failure
codes given where no worker is involved, a per-call deadline, and the in-process reranker shared between
threads scoring one caller at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.client import (
    DEFAULT_TASK_CANDIDATES,
    InProcessReranker,
    merge_outcomes,
    split_candidates,
)
from hybrid_rerank.workers.errors import ConfigurationError
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome
from hybrid_rerank.workers.scorer import CrossEncoderScorer, ScoredCandidate

# Nothing listens here (this helper's own port range): a broker that refuses connections.
DEAD_BROKER = "redis://127.0.0.1:9409/0"


def cands(n: int, tag: str = "d") -> list[Candidate]:
    return [Candidate(f"{tag}{i}", f"text {i}") for i in range(n)]


# ------------------------------------------------------------------------------------------ splitting


@pytest.mark.parametrize(
    ("n", "per_task", "sizes"),
    [
        (150, 64, [64, 64, 22]),
        (128, 64, [64, 64]),
        (64, 64, [64]),
        (1, 64, [1]),
        (0, 64, []),
        (3, 1, [1, 1, 1]),
    ],
)
def test_candidates_split_into_consecutive_tasks_in_order(n: int, per_task: int, sizes: list[int]) -> None:
    candidates = cands(n)
    chunks = split_candidates(candidates, per_task)
    assert [len(c) for c in chunks] == sizes
    assert [c for chunk in chunks for c in chunk] == candidates


def test_a_task_holds_at_least_one_candidate() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_candidates(cands(3), 0)


def test_merged_chunks_give_every_score_the_cached_count_and_the_models_weight() -> None:
    chunks = split_candidates(cands(5), 2)
    parts = [
        RerankOutcome({"d0": 0.5, "d1": -1.0}, model="m", interpolation_weight=0.3, cached=2),
        RerankOutcome({"d2": 2.0, "d3": 0.0}, model="m", interpolation_weight=0.3, cached=0),
        RerankOutcome({"d4": 1.5}, model="m", interpolation_weight=0.3, cached=1),
    ]
    merged = merge_outcomes(parts, chunks)
    assert merged == RerankOutcome(
        {"d0": 0.5, "d1": -1.0, "d2": 2.0, "d3": 0.0, "d4": 1.5},
        model="m",
        interpolation_weight=0.3,
        cached=3,
    )
    assert merged.code is None and merged.reason is None


def test_one_failed_chunk_fails_the_whole_request_with_its_code() -> None:
    chunks = split_candidates(cands(6), 2)
    refused = RerankOutcome.failed("rerank worker refused the request: bad", "worker_refused")
    parts = [RerankOutcome({"d0": 1.0, "d1": 2.0}), refused, RerankOutcome({"d4": 1.0, "d5": 2.0})]
    assert merge_outcomes(parts, chunks) is refused  # never the other chunks' scores


def test_a_chunk_reply_without_a_score_for_one_of_its_candidates_is_malformed() -> None:
    chunks = split_candidates(cands(4), 2)
    parts = [RerankOutcome({"d0": 1.0, "d1": 2.0}), RerankOutcome({"d2": 1.0, "elsewhere": 2.0})]
    merged = merge_outcomes(parts, chunks)
    assert merged.scores is None and merged.code == "malformed_reply"
    assert (
        merged.reason == "rerank reply for task 2 of 2 has no score for 1 of its 2 candidates (first: 'd3')"
    )


def test_merging_needs_one_outcome_per_chunk() -> None:
    with pytest.raises(ValueError, match="2 outcomes for 3 chunks"):
        merge_outcomes([RerankOutcome({}), RerankOutcome({})], split_candidates(cands(3), 1))
    nothing = merge_outcomes([], [])
    assert nothing.scores is None and nothing.code == "invalid_request"


def test_the_task_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", DEAD_BROKER)
    monkeypatch.setenv("RERANK_MODEL", "/models/any")
    assert load_settings(_env_file=None).rerank_task_candidates == DEFAULT_TASK_CANDIDATES == 64
    monkeypatch.setenv("RERANK_TASK_CANDIDATES", "16")
    assert make_celery_reranker(load_settings(_env_file=None)).task_candidates == 16
    monkeypatch.setenv("RERANK_TASK_CANDIDATES", "0")
    with pytest.raises(ConfigurationError, match="RERANK_TASK_CANDIDATES"):
        load_settings(_env_file=None)


# ------------------------------------------------------------------ Celery client, no broker answering


def test_a_broker_that_refuses_connections_is_broker_unreachable() -> None:
    reranker = make_celery_reranker(
        load_settings(
            _env_file=None, redis_url=DEAD_BROKER, rerank_model="/models/any", rerank_deadline_ms=5000
        )
    )
    started = time.monotonic()
    outcome = reranker.rerank("q", cands(3))
    assert time.monotonic() - started < 5.0  # fails fast, well before the deadline
    assert outcome.scores is None and outcome.code == "broker_unreachable"
    assert (outcome.reason or "").startswith("rerank broker unreachable: ")
    many = reranker.rerank_many([("a", cands(2)), ("b", cands(100))])
    assert [o.code for o in many] == ["broker_unreachable", "broker_unreachable"]


def test_no_candidates_and_a_spent_deadline_fail_before_sending() -> None:
    """With a dead broker, anything sent would fail as broker_unreachable: these never try."""
    reranker = make_celery_reranker(load_settings(_env_file=None, redis_url=DEAD_BROKER, rerank_model="/m/x"))
    empty = reranker.rerank("q", [])
    assert (empty.code, empty.reason) == (
        "invalid_request",
        "'candidates' is empty: there is nothing to rerank",
    )
    for spent in (0, -5):
        late = reranker.rerank("q", cands(2), deadline_ms=spent)
        assert (late.code, late.reason) == ("deadline", f"rerank deadline of {spent} ms passed")
    assert [o.code for o in reranker.rerank_many([("q", [])])] == ["invalid_request"]


# -------------------------------------------------------------------------------------- in process


class Watching(CrossEncoderScorer):
    """The real scorer, noting how many callers are inside `score` at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.inside = 0
        self.most_inside = 0
        self.count = threading.Lock()

    def score(self, query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
        with self.count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            time.sleep(0.02)  # long enough that unguarded callers would overlap
            return super().score(query, candidates)
        finally:
            with self.count:
                self.inside -= 1


def test_the_in_process_reranker_scores_one_caller_at_a_time(tiny_cross_encoder_dir: Path) -> None:
    scorer = Watching(str(tiny_cross_encoder_dir), max_length=64)
    reranker = InProcessReranker(scorer)
    candidates = [Candidate("moon", "the moon shows a phase"), Candidate("steak", "rest the steak")]
    expected = reranker.rerank("moon phase", candidates).scores
    outcomes: list[RerankOutcome] = []
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            query = "moon phase" if i % 2 == 0 else "grill the steak"
            outcomes.append(reranker.rerank(query, candidates, deadline_ms=1))
        except BaseException as exc:  # any error ("Already borrowed") fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(outcomes) == 8
    assert all(o.scores is not None and o.code is None for o in outcomes), [o.reason for o in outcomes]
    assert scorer.most_inside == 1
    # deadline_ms=1 was ignored: scoring in process always finishes, with the same scores.
    same = [o for o in outcomes if o.scores == expected]
    assert len(same) == 4


def test_in_process_failures_carry_their_codes(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    missing = InProcessReranker(CrossEncoderScorer(str(tmp_path / "missing-model"))).rerank("q", cands(1))
    assert missing.code == "model_unavailable" and "could not load rerank model" in (missing.reason or "")

    class Broken(CrossEncoderScorer):
        def score(self, query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
            raise RuntimeError("out of memory\nmore detail")

    broken = InProcessReranker(Broken(str(tiny_cross_encoder_dir))).rerank("q", cands(1))
    assert (broken.code, broken.reason) == ("scoring_failed", "reranking failed: RuntimeError: out of memory")
