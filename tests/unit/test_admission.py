"""Goodput under overload, the decisions by hand: a worker's service time per candidate (EWMA), the skip of a
task that cannot end before its expiry, the client's admission from queue depth and service time, what the
workers publish, and the client refusing at once (`overloaded`) without sending."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.admission import (
    Admission,
    QueueLoad,
    ServiceTime,
    admission,
    encode_service_time,
    fresh_service_times,
    seconds_left,
    should_skip,
)
from hybrid_rerank.workers.celery_app import make_app
from hybrid_rerank.workers.client import CeleryReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.protocol import Candidate

# Nothing listens here: a broker that refuses connections, so a request that is sent fails as unreachable.
DEAD_BROKER = "redis://127.0.0.1:9409/0"


def test_the_service_time_is_an_ewma_per_candidate() -> None:
    service = ServiceTime(alpha=0.3, warm_up=1, max_age_s=30.0)
    assert service.estimate_s(30, now=0.0) is None  # nothing measured: no estimate, nothing skipped
    service.observe(9.0, 30, now=0.0)  # the first call: warm-up, not learnt
    assert service.per_candidate_s is None
    service.observe(0.6, 30, now=1.0)  # 0.02 s per candidate: the first sample is the average
    assert service.per_candidate_s == pytest.approx(0.02)
    service.observe(1.2, 30, now=2.0)  # 0.04: 0.02 + 0.3 * (0.04 - 0.02) = 0.026
    assert service.per_candidate_s == pytest.approx(0.026)
    service.observe(5.0, 0, now=3.0)  # every score from the cache: nothing learnt about the model
    assert service.estimate_s(30, now=3.0) == pytest.approx(0.78)
    assert service.estimate_s(30, now=32.0) == pytest.approx(0.78)  # learnt 30 s ago: still good
    assert service.estimate_s(30, now=32.5) is None  # older: forgotten, the next task runs and relearns
    with pytest.raises(ValueError, match="alpha"):
        ServiceTime(alpha=0.0)


def test_seconds_left_reads_celerys_expiry() -> None:
    now = datetime(2026, 12, 2, 2, 0, 0, tzinfo=UTC)
    assert seconds_left("2026-12-02T02:00:03+00:00", now) == pytest.approx(3.0)
    assert seconds_left("2026-12-02T02:00:03", now) == pytest.approx(3.0)  # naive: UTC
    assert seconds_left(datetime(2026, 12, 2, 1, 59, 59, tzinfo=UTC), now) == pytest.approx(-1.0)
    assert seconds_left(None, now) is None  # batch work has no expiry
    assert seconds_left("not a date", now) is None


@pytest.mark.parametrize(
    ("left_s", "estimate_s", "skip"),
    [
        (None, 1.0, False),  # no expiry: batch work always runs
        (0.0, None, True),  # already expired
        (-1.0, None, True),
        (0.5, None, False),  # no estimate yet: run it
        (0.5, 0.78, True),  # would end 280 ms after its caller gave up
        (0.8, 0.78, False),
    ],
)
def test_a_task_is_skipped_when_its_expiry_comes_before_its_expected_end(
    left_s: float | None, estimate_s: float | None, skip: bool
) -> None:
    assert should_skip(left_s, estimate_s) is skip


def test_admission_weighs_the_queue_ahead_over_the_consumers() -> None:
    load = QueueLoad(queued=6, per_candidate_s=(0.02, 0.04))  # mean 0.03 s: 0.9 s per 30-candidate task
    refused = admission(load, [30], budget_s=3.0)
    # wait 6 * 0.9 / 2 = 2.7 s, own 0.9 s: 3.6 s > 3.0 s
    assert refused == Admission(False, pytest.approx(2.7), pytest.approx(0.9))  # type: ignore[arg-type]
    assert admission(load, [30], budget_s=3.6).admitted  # at the budget exactly: admitted
    shorter = admission(QueueLoad(4, (0.02, 0.04)), [30], budget_s=3.0)  # 1.8 + 0.9 = 2.7 s
    assert shorter.admitted and shorter.wait_s == pytest.approx(1.8)
    assert "6 tasks queued for 2 worker processes" in refused.reason(6, 2, 3.0)
    assert (
        "2700 ms of waiting plus 900 ms of scoring, over the 3000 ms the deadline allows"
        in refused.reason(6, 2, 3.0)
    )


def test_a_split_request_counts_its_own_tasks_in_rounds_over_the_consumers() -> None:
    load = QueueLoad(queued=0, per_candidate_s=(0.01, 0.01))
    decision = admission(load, [64, 64, 22], budget_s=1.0)  # 2 rounds of a 0.64 s task: 1.28 s
    assert decision.own_s == pytest.approx(1.28) and not decision.admitted
    assert admission(load, [64, 64, 22], budget_s=1.3).admitted


def test_unknown_load_admits() -> None:
    assert admission(None, [30], budget_s=0.001).admitted  # Redis did not answer: the deadline still holds
    assert admission(QueueLoad(100, ()), [30], budget_s=0.001).admitted  # nobody published recently
    assert admission(QueueLoad(100, (0.01,)), [], budget_s=0.001).admitted  # nothing to send


def test_only_fresh_well_formed_service_times_count_as_consumers() -> None:
    entries = {
        b"host:1": encode_service_time(0.02, at=100.0),
        b"host:2": encode_service_time(0.05, at=30.0),  # 70 s old: gone or idle
        b"host:3": b"garbage",
        "host:4": json.dumps({"per_candidate_s": 0.0, "at": 100.0}),  # not a time
        "host:5": json.dumps({"at": 100.0}),
        "host:6": encode_service_time(0.01, at=95.0),
    }
    assert fresh_service_times(entries, now=100.0, fresh_s=60.0) == (0.01, 0.02)


class FixedLoad:
    """The queue's load as a probe would read it from Redis."""

    def __init__(self, load: QueueLoad | None) -> None:
        self.load = load
        self.reads = 0

    def read(self) -> QueueLoad | None:
        self.reads += 1
        return self.load


def reranker(probe: FixedLoad | None, share: float = 1.0) -> CeleryReranker:
    settings = load_settings(_env_file=None, redis_url=DEAD_BROKER, rerank_model="m")
    return CeleryReranker(
        make_app(settings, fail_fast=True),
        "m",
        deadline_ms=3000,
        max_chars=1000,
        load_probe=probe,
        admission_share=share,
    )


CANDIDATES = [Candidate(f"d{i}", f"text {i}") for i in range(30)]


def test_an_overloaded_queue_refuses_at_once_without_sending() -> None:
    probe = FixedLoad(QueueLoad(queued=20, per_candidate_s=(0.02, 0.02)))  # 20 * 0.6 / 2 = 6 s of waiting
    started = time.monotonic()
    outcome = reranker(probe).rerank("q", CANDIDATES)
    assert outcome.code == "overloaded" and probe.reads == 1
    assert "20 tasks queued for 2 worker processes" in (outcome.reason or "")
    # Not sent: sending to the dead broker would have been `broker_unreachable`.
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("probe", "share"),
    [
        (FixedLoad(QueueLoad(queued=1, per_candidate_s=(0.02, 0.02))), 1.0),  # 0.3 + 0.6 s: in time
        (FixedLoad(None), 1.0),  # load unknown
        (None, 1.0),  # admission off
    ],
)
def test_an_admitted_request_is_sent(probe: FixedLoad | None, share: float) -> None:
    assert reranker(probe, share).rerank("q", CANDIDATES).code == "broker_unreachable"


def test_the_share_of_the_deadline_tightens_admission() -> None:
    load = QueueLoad(queued=5, per_candidate_s=(0.02, 0.02))  # 1.5 s of waiting + 0.6 s: 2.1 s
    assert reranker(FixedLoad(load), share=1.0).rerank("q", CANDIDATES).code == "broker_unreachable"
    assert reranker(FixedLoad(load), share=0.5).rerank("q", CANDIDATES).code == "overloaded"
    with pytest.raises(ValueError, match="admission_share"):
        reranker(None, share=0.0)


def test_the_factory_wires_admission_from_the_settings() -> None:
    on = make_celery_reranker(load_settings(_env_file=None, redis_url=DEAD_BROKER, rerank_model="m"))
    assert on.load_probe is not None and on.admission_share == 0.75
    # The probe against a dead Redis reads nothing, quickly: unknown load admits.
    assert on.load_probe.read() is None
    off = make_celery_reranker(
        load_settings(_env_file=None, redis_url=DEAD_BROKER, rerank_model="m", rerank_admission=False)
    )
    assert off.load_probe is None
