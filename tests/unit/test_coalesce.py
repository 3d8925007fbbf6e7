"""The cross-request batcher (`workers.coalesce`) with plain scoring functions: requests that meet within
the window go to one call, each gets its own scores back, a failed call fails each of its requests, and
`score_many` gives what `score` gives, request by request, on a real (tiny) model."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from hybrid_rerank.workers.coalesce import Coalescer, score_many
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import CrossEncoderScorer, ScoredCandidate

Requests = Sequence[tuple[str, Sequence[Candidate]]]


def by_length(requests: Requests) -> list[list[ScoredCandidate]]:
    return [[ScoredCandidate(c.id, float(len(query + c.text))) for c in cands] for query, cands in requests]


def in_threads(coalescer: Coalescer, requests: list[tuple[str, list[Candidate]]]) -> list[object]:
    results: list[object] = [None] * len(requests)

    def run(index: int) -> None:
        try:
            results[index] = coalescer.score(*requests[index])
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_requests_within_the_window_share_one_call() -> None:
    calls: list[int] = []

    def score(requests: Requests) -> list[list[ScoredCandidate]]:
        calls.append(len(requests))
        return by_length(requests)

    coalescer = Coalescer(score, window_s=1.0)  # generous: the three threads always meet in it
    requests = [(f"q{i}", [Candidate(f"d{i}", "x" * i), Candidate("e", "")]) for i in range(3)]
    results = in_threads(coalescer, requests)
    assert calls == [3]
    for (query, candidates), result in zip(requests, results, strict=True):
        assert result == (by_length([(query, candidates)])[0], 3)
    assert coalescer.stats().largest == 3


def test_a_full_batch_does_not_wait_out_the_window_and_a_failure_reaches_each_request() -> None:
    def fail(requests: Requests) -> list[list[ScoredCandidate]]:
        raise RuntimeError("the model is gone")

    coalescer = Coalescer(fail, window_s=600.0, max_pairs=2)
    results = in_threads(coalescer, [("q", [Candidate("a", "x"), Candidate("b", "y")])])
    assert isinstance(results[0], RuntimeError) and "gone" in str(results[0])
    with pytest.raises(ValueError, match="at least 0"):
        Coalescer(fail, window_s=-1.0)


def test_score_many_equals_score_request_by_request(tiny_cross_encoder_dir: Path) -> None:
    scorer = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=32, max_passages=2)
    long_text = " ".join(["the moon orbit earth light phase"] * 20)  # two passages
    requests = [
        ("moon phase", [Candidate("a", long_text), Candidate("b", "the sun is a star")]),
        ("grill steak", [Candidate("c", "rest the steak after you grill it")]),
    ]
    together = score_many(scorer, requests)
    for (query, candidates), scored in zip(requests, together, strict=True):
        alone = scorer.score(query, candidates)
        assert [s.id for s in scored] == [s.id for s in alone]
        assert [s.score for s in scored] == pytest.approx([s.score for s in alone], rel=1e-4)
