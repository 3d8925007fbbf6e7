from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.errors import ModelLoadError
from hybrid_rerank.workers.errors import RerankInputError
from hybrid_rerank.workers.protocol import Candidate, encode_reply, parse_reply, parse_request
from hybrid_rerank.workers.score_cache import cached_scores
from hybrid_rerank.workers.scorer import CrossEncoderScorer

LONG_TEXT = " ".join(f"the moon orbit earth light phase {word}" for word in ["sun", "star", "rain"] * 12)


@pytest.fixture(scope="module")
def scorer(tiny_cross_encoder_dir: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=32, batch_size=4, max_passages=3)


def test_loads_once_and_is_reused(scorer: CrossEncoderScorer) -> None:
    assert scorer.load() is scorer.load()
    assert "local folder" in scorer.description


def test_scores_come_back_in_input_order_and_are_deterministic(scorer: CrossEncoderScorer) -> None:
    candidates = [
        Candidate("a", "the moon has a phase"),
        Candidate("b", "grill the steak"),
        Candidate("c", ""),
    ]
    first = scorer.score("why does the moon show phases", candidates)
    again = scorer.score("why does the moon show phases", list(reversed(candidates)))
    assert [s.id for s in first] == ["a", "b", "c"]
    assert {s.id: s.score for s in first} == pytest.approx({s.id: s.score for s in again})
    assert len({round(s.score, 6) for s in first}) > 1  # the model really reads the text


def test_short_text_is_one_passage(scorer: CrossEncoderScorer) -> None:
    assert scorer.passages("moon", "the moon has a phase") == ["the moon has a phase"]


def test_long_text_is_split_into_overlapping_passages_that_fit_the_window(scorer: CrossEncoderScorer) -> None:
    query = "why moon phase"
    passages = scorer.passages(query, LONG_TEXT)
    assert len(passages) == 3  # capped by max_passages
    tokenizer = scorer.load().tokenizer
    for passage in passages:
        pair = tokenizer(query, passage)["input_ids"]
        assert len(pair) <= scorer.max_length
        assert passage in LONG_TEXT
    assert passages[0].split()[-1] in passages[1]  # windows overlap


def test_a_long_document_scores_as_its_best_passage(scorer: CrossEncoderScorer) -> None:
    query = "why moon phase"
    passages = scorer.passages(query, LONG_TEXT)
    each = scorer.score(query, [Candidate(str(i), p) for i, p in enumerate(passages)])
    whole = scorer.score(query, [Candidate("doc", LONG_TEXT)])[0]
    assert whole.score == pytest.approx(max(s.score for s in each), abs=1e-6)


def test_request_round_trip_is_plain_json(scorer: CrossEncoderScorer) -> None:
    request = parse_request({"query": "moon", "candidates": [{"id": "x", "text": "the moon"}]})
    scores, cached = cached_scores(scorer, None, request.query, request.candidates)
    reply = json.loads(json.dumps(encode_reply(scorer.model_name, scores, interpolation_weight=0.25)))
    assert reply["model"] == scorer.model_name
    assert [item["id"] for item in reply["scores"]] == ["x"]
    assert isinstance(reply["scores"][0]["score"], float)
    assert cached == 0
    outcome = parse_reply("SUCCESS", reply)
    assert outcome.scores == {"x": scores[0][1]}
    assert outcome.interpolation_weight == 0.25
    assert outcome.model == scorer.model_name


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "must be an object"),
        ({"candidates": []}, "'query'"),
        ({"query": " ", "candidates": []}, "'query'"),
        ({"query": "q"}, "'candidates' must be a list"),
        ({"query": "q", "candidates": []}, "'candidates' is empty"),
        ({"query": "q", "candidates": [{"id": "a", "text": "x" * 1_000_001}]}, "over the limit of 1,000,000"),
        ({"query": "q", "candidates": ["x"]}, "candidate 0 must be an object"),
        ({"query": "q", "candidates": [{"id": "", "text": "t"}]}, "'id'"),
        (
            {"query": "q", "candidates": [{"id": "a", "text": 5}]},
            r"candidate 0 \(a\): 'text' must be a string",
        ),
    ],
)
def test_malformed_requests_are_refused_clearly(payload: object, message: str) -> None:
    with pytest.raises(RerankInputError, match=message):
        parse_request(payload)


def test_a_missing_model_gives_an_actionable_error(tmp_path: Path) -> None:
    scorer = CrossEncoderScorer(str(tmp_path / "no-such-model-here"), max_length=32)
    with pytest.raises(ModelLoadError, match="RERANK_MODEL"):
        scorer.load()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="local folder"):
        CrossEncoderScorer(str(empty)).load()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="unknown rerank backend 'tensorrt'"):
        CrossEncoderScorer("x", backend="tensorrt")  # type: ignore[arg-type]


def test_text_past_what_the_model_reads_is_cut_before_tokenizing(scorer: CrossEncoderScorer) -> None:
    huge = "moon " * 100_000
    assert scorer.max_chars == 32 * 3 * 12
    passages = scorer.passages("moon", huge)
    assert len(passages) == 3 and sum(len(p) for p in passages) <= 2 * scorer.max_chars


def test_max_length_is_clipped_to_the_model_window(tiny_cross_encoder_dir: Path) -> None:
    scorer = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=100_000)
    scored = scorer.score("moon phase", [Candidate("a", LONG_TEXT * 20)])
    assert scorer.max_length == 512 and len(scored) == 1  # the tiny model has 512 positions
