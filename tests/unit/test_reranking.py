from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.errors import ModelLoadError
from hybrid_rerank.workers.errors import RerankInputError
from hybrid_rerank.workers.protocol import Candidate, encode_reply, parse_reply, parse_request
from hybrid_rerank.workers.score_cache import cached_scores
from hybrid_rerank.workers.scorer import PASSAGE_OVERLAP, CrossEncoderScorer
from tests.tiny_models import WORDS, build_tiny_cross_encoder

LONG_TEXT = " ".join(f"the moon orbit earth light phase {word}" for word in ["sun", "star", "rain"] * 12)
MARKER = "moon"
# Every word once, each one token of the tiny vocabulary: a passage is known by its words, and two passages
# share words only where they overlap.
DISTINCT = [word for word in dict.fromkeys(WORDS) if word != MARKER]


@pytest.fixture(scope="module")
def scorer(tiny_cross_encoder_dir: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=32, batch_size=4, max_passages=3)


@pytest.fixture(scope="module")
def marker_scorer(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderScorer:
    """A cross-encoder whose score is known: 0 without MARKER, clearly positive with it."""
    folder = build_tiny_cross_encoder(tmp_path_factory.mktemp("marker") / "ce", marker=MARKER)
    return CrossEncoderScorer(str(folder), max_length=32, batch_size=4, max_passages=4, backend="torch")


def test_the_tiny_tokenizer_reads_words_not_unknowns(scorer: CrossEncoderScorer) -> None:
    tokenizer = scorer.load().tokenizer
    ids = tokenizer(" ".join(DISTINCT), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(DISTINCT) and tokenizer.unk_token_id not in ids  # one known token per word
    assert len(set(ids)) == len(DISTINCT)


def test_the_marker_model_scores_pairs_with_the_marker_clearly_higher(
    marker_scorer: CrossEncoderScorer,
) -> None:
    query = "why does the sun heat"
    texts = {
        "plain": "the sun has a phase",
        "marked": f"the {MARKER} has a phase",
        "steak": "grill the steak",
        "denser": f"{MARKER} {MARKER}",
        "empty": "",
    }
    scores = {s.id: s.score for s in marker_scorer.score(query, [Candidate(i, t) for i, t in texts.items()])}
    for doc_id in ("plain", "steak", "empty"):
        assert scores[doc_id] == pytest.approx(0.0, abs=1e-4)
    assert scores["marked"] > 5.0  # measured 8.2 (0 without the marker)
    assert scores["denser"] > scores["marked"]  # a larger share of marker tokens scores higher


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
    text = " ".join(DISTINCT)  # no word twice: shared words can only come from the overlap
    passages = scorer.passages(query, text)
    assert len(passages) == 3  # capped by max_passages
    tokenizer = scorer.load().tokenizer
    # The window beside the query: max_length less [CLS] q [SEP] d [SEP] and the query's three tokens.
    budget = scorer.max_length - 3 - len(query.split())
    overlap = budget - int(budget * (1 - PASSAGE_OVERLAP))
    assert overlap == 7 and abs(overlap - PASSAGE_OVERLAP * budget) < 1  # 26 tokens, 7 shared
    words = [p.split() for p in passages]
    for i, passage in enumerate(passages):
        assert len(tokenizer(query, passage)["input_ids"]) <= scorer.max_length
        assert len(words[i]) == budget  # each window is full (the text runs on past the third)
        start = i * (budget - overlap)
        assert words[i] == DISTINCT[start : start + budget]  # consecutive windows, in order
    for before, after in itertools.pairwise(words):
        assert before[-overlap:] == after[:overlap]  # consecutive passages share the overlap share
        assert not set(before[:-overlap]) & set(after)  # and nothing else


def test_a_long_document_scores_as_its_best_passage_not_its_first(marker_scorer: CrossEncoderScorer) -> None:
    """MaxP: the marker sits in the middle of the text, in neither the first nor the last passage."""
    query = "why does the sun heat"
    text = " ".join([*DISTINCT[:40], MARKER, *DISTINCT[40:]])
    passages = marker_scorer.passages(query, text)
    assert len(passages) == 4
    marked = [i for i, p in enumerate(passages) if MARKER in p.split()]
    assert marked and 0 not in marked and len(passages) - 1 not in marked
    each = [
        s.score for s in marker_scorer.score(query, [Candidate(str(i), p) for i, p in enumerate(passages)])
    ]
    assert [i for i, score in enumerate(each) if score > 1.0] == marked  # only those passages score
    whole = marker_scorer.score(query, [Candidate("doc", text)])[0]
    assert whole.score == pytest.approx(max(each), abs=1e-5)
    assert whole.score > each[0] + 3.0 and whole.score > each[-1] + 3.0  # measured 4.5 against 0
    assert whole.score > sum(each) / len(each) + 1.0  # not the mean of its passages either


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
