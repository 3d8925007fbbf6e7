"""Passage splitting and MaxP with hand-computed windows, on the tiny random cross-encoder.

Every word below is one token of the tiny model's vocabulary, so token i is word i. With max_length 16 a
(query, passage) pair has 16 - 3 special tokens = 13 for the two texts; a 1-token query leaves a budget of
13 - min(1, int(13 * 0.5)) = 12 tokens per passage, and consecutive passages start int(12 * 0.75) = 9 tokens
apart (a quarter overlaps).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.tiny_models import WORDS as TINY_WORDS

# Thirty distinct words the tiny model's vocabulary holds, so every one is its own token.
WORDS = TINY_WORDS[TINY_WORDS.index("moon") : TINY_WORDS.index("commit") + 1]

TOL = 1e-7  # see test_a_document_scores_as_its_best_passage


def words(start: int, end: int) -> str:
    return " ".join(WORDS[start:end])


@pytest.fixture(scope="module")
def scorer(tiny_cross_encoder_dir: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=16, backend="torch")


def test_the_tiny_vocabulary_reads_each_word_as_one_token(scorer: CrossEncoderScorer) -> None:
    tokenizer = scorer.load().tokenizer
    assert len(WORDS) == 30 and len(set(WORDS)) == 30
    assert len(tokenizer(words(0, 30), add_special_tokens=False)["input_ids"]) == 30
    assert tokenizer.num_special_tokens_to_add(pair=True) == 3  # [CLS] query [SEP] passage [SEP]


def test_passages_are_budget_long_windows_a_step_apart(scorer: CrossEncoderScorer) -> None:
    # Budget 12, step 9: words 0-11, 9-20, 18-29; the last window reaches the end, so it is the last.
    assert scorer.passages("moon", words(0, 30)) == [words(0, 12), words(9, 21), words(18, 30)]
    # 31 words: a fourth window starts at 27 and is cut at the end (max_passages is 4).
    assert scorer.passages("moon", words(0, 30) + " moon") == [
        words(0, 12),
        words(9, 21),
        words(18, 30),
        words(27, 30) + " moon",
    ]


def test_a_text_of_exactly_the_budget_is_one_passage(scorer: CrossEncoderScorer) -> None:
    assert scorer.passages("moon", words(0, 12)) == [words(0, 12)]
    assert scorer.passages("moon", words(0, 13)) == [words(0, 12), words(9, 13)]
    # A text that fits is passed whole, as it is; passages cut from a longer one start and end on tokens.
    assert scorer.passages("moon", f" {words(0, 12)}\n") == [f" {words(0, 12)}\n"]
    assert scorer.passages("moon", f" {words(0, 13)}\n") == [words(0, 12), words(9, 13)]


def test_the_number_of_passages_is_capped(tiny_cross_encoder_dir: Path) -> None:
    two = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=16, backend="torch", max_passages=2)
    assert two.passages("moon", words(0, 30)) == [words(0, 12), words(9, 21)]
    one = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=16, backend="torch", max_passages=1)
    assert one.passages("moon", words(0, 30)) == [words(0, 12)]


def test_the_query_takes_its_tokens_from_the_budget_up_to_half_the_window(scorer: CrossEncoderScorer) -> None:
    # 3 query tokens: budget 13 - 3 = 10, step int(7.5) = 7.
    assert scorer.passages("moon sun star", words(0, 20)) == [words(0, 10), words(7, 17), words(14, 20)]
    # 10 query tokens count as int(13 * 0.5) = 6: budget 7, step int(5.25) = 5.
    assert scorer.passages(words(0, 10), words(0, 12)) == [words(0, 7), words(5, 12)]


def test_a_one_token_window_still_makes_passages(tiny_cross_encoder_dir: Path) -> None:
    # max_length 4: a window of 4 - 3 = 1 token; the query keeps int(0.5) = 0 of it; budget 1, step 1.
    tiny = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=4, backend="torch")
    assert tiny.passages("moon", words(0, 3)) == ["moon", "sun", "star"]
    assert tiny.passages("moon", words(0, 6)) == ["moon", "sun", "star", "planet"]


def test_text_past_what_the_model_reads_is_cut_first(scorer: CrossEncoderScorer) -> None:
    # 16 tokens * 4 passages * 12 characters = 768 characters are read; two tokens fit one passage, so the
    # whole (cut) text is the passage, and "sun" after the spaces is never read.
    assert scorer.max_chars == 768
    assert scorer.passages("moon", "moon" + " " * 1000 + "sun") == ["moon" + " " * 764]


def test_no_candidates_need_no_model(tmp_path: Path) -> None:
    assert CrossEncoderScorer(str(tmp_path / "no-model-here")).score("moon", []) == []


def test_a_document_scores_as_its_best_passage(scorer: CrossEncoderScorer) -> None:
    """MaxP: the score of a long document is the highest of its passages' scores, each computed here
    through `score_pairs` directly. The document is rotated so that the best passage is not always the
    first: a document scored by its first (or last) passage would fail on some rotation.

    The random tiny model's scores are small (about 2.5e-4) and passages differ by 5e-7 or more, while
    padding in a mixed batch moves a score by about 3e-9: hence the absolute tolerance."""
    best_at = set()
    for shift in range(0, 30, 3):
        text = " ".join(WORDS[shift:] + WORDS[:shift])
        passages = scorer.passages("moon", text)
        assert len(passages) == 3
        each = [float(s) for s in scorer.score_pairs(["moon"] * 3, passages)]
        assert min(abs(a - b) for a, b in [(each[0], each[1]), (each[0], each[2]), (each[1], each[2])]) > TOL
        (whole,) = scorer.score("moon", [Candidate("doc", text)])
        assert whole.id == "doc"
        assert whole.score == pytest.approx(max(each), rel=0.0, abs=TOL)
        best_at.add(each.index(max(each)))
    assert best_at == {0, 1, 2}


def test_each_candidate_keeps_its_own_best_passage_in_input_order(scorer: CrossEncoderScorer) -> None:
    texts = {"long": words(0, 30), "short": words(3, 8), "medium": words(10, 25)}
    candidates = [Candidate(doc_id, text) for doc_id, text in texts.items()]
    scored = scorer.score("sun", candidates)
    assert [s.id for s in scored] == ["long", "short", "medium"]
    for s in scored:
        passages = scorer.passages("sun", texts[s.id])
        expected = max(float(v) for v in scorer.score_pairs(["sun"] * len(passages), passages))
        assert s.score == pytest.approx(expected, rel=0.0, abs=TOL)
    assert min(abs(a.score - b.score) for a, b in [(scored[0], scored[1]), (scored[1], scored[2])]) > TOL
