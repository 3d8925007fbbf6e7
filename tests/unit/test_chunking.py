"""Index-time passages: windows of tokens with overlap, kept as character offsets into the text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.base import Passage
from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.chunking import (
    PassageOptions,
    PassageSplitter,
    model_splitter,
    passage_spans,
)
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import ConfigurationError, IndexMismatchError
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.stages import candidate_text
from hybrid_rerank.workers.runtime.models import resolve_model


def words(text: str) -> list[tuple[int, int]]:
    """A hand-checkable tokenizer: each run of non-spaces is one token."""
    return [match.span() for match in re.finditer(r"\S+", text)]


TEXT = " ".join(f"w{i}" for i in range(10))  # "w0 w1 ... w9": token i starts at 3 * i


def test_a_text_that_fits_one_window_is_one_passage_covering_it_all() -> None:
    assert passage_spans(TEXT, words(TEXT), PassageOptions(tokens=10, overlap=3)) == [Passage(0, len(TEXT))]
    assert passage_spans(" short ", words(" short "), PassageOptions(4, 1)) == [Passage(0, 7)]
    assert passage_spans("", [], PassageOptions(4, 1)) == [Passage(0, 0)]


def test_windows_of_four_tokens_overlapping_by_two() -> None:
    spans = passage_spans(TEXT, words(TEXT), PassageOptions(tokens=4, overlap=2))
    texts = [TEXT[p.start : p.end] for p in spans]
    assert texts == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert spans[1] == Passage(6, 17)  # offsets of w2's start and w5's end


def test_the_last_window_ends_at_the_last_token_and_every_character_is_covered() -> None:
    text = f"  {TEXT}  "
    spans = passage_spans(text, words(text), PassageOptions(tokens=4, overlap=1))
    texts = [text[p.start : p.end].strip() for p in spans]
    assert texts == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert spans[0].start == 0 and spans[-1].end == len(text)
    covered = {i for p in spans for i in range(p.start, p.end)}
    assert covered == set(range(len(text)))
    # 9 tokens past one window of 4 with steps of 3: windows start at tokens 0, 3, and 6 (the last, aligned)
    uneven = passage_spans(TEXT, words(TEXT), PassageOptions(tokens=4, overlap=0))
    assert [TEXT[p.start : p.end] for p in uneven] == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w6 w7 w8 w9"]


@pytest.mark.parametrize(("tokens", "overlap"), [(0, 0), (4, 4), (4, -1)])
def test_impossible_windows_are_refused_with_the_options_named(tokens: int, overlap: int) -> None:
    with pytest.raises(ConfigurationError, match="--passage-tokens"):
        PassageOptions(tokens, overlap)


def test_passage_documents_keep_the_title_and_cut_the_text() -> None:
    splitter = PassageSplitter(words, PassageOptions(4, 2))
    doc = Document("d", TEXT, title="Words")
    spans = splitter.spans(doc.text)
    pieces = splitter.passage_documents(doc, spans)
    assert [(p.title, p.text) for p in pieces[:2]] == [("Words", "w0 w1 w2 w3"), ("Words", "w2 w3 w4 w5")]
    assert splitter.label == "4/2 tokens"


def test_the_bi_encoder_tokenizer_counts_word_pieces_with_offsets() -> None:
    minilm = resolve_model("all-MiniLM-L6-v2").location
    splitter = model_splitter(minilm, PassageOptions(tokens=8, overlap=2))
    text = "Unbelievably, the photosynthesis experiments failed. " * 3
    offsets = splitter.token_offsets(text)
    assert len(offsets) > len(text.split())  # word pieces, not words
    assert all(text[s:e].strip() for s, e in offsets)
    spans = splitter.spans(text)
    assert len(spans) > 1 and spans[0].start == 0 and spans[-1].end == len(text)
    for span in spans:  # each window holds exactly 8 tokens of the model's tokenizer
        inside = [o for o in offsets if span.start <= o[0] and o[1] <= span.end]
        assert len(inside) == 8


def test_a_folder_that_is_not_local_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="local"):
        model_splitter(str(tmp_path / "nowhere"), PassageOptions())


def test_the_reranker_reads_the_matched_passage_first() -> None:
    doc = Document("d", "intro text. the answer is here. closing words.", title="T")
    assert candidate_text(doc, None) == doc.full_text
    answer = doc.text.index("the answer")
    passage = Passage(answer, answer + len("the answer is here."))
    assert candidate_text(doc, passage) == "T. the answer is here. closing words. intro text."
    untitled = Document("d", doc.text)
    assert candidate_text(untitled, passage).startswith("the answer is here.")


def test_indexing_with_passages_embeds_each_passage_and_finds_a_late_one(
    tmp_path: Path, embedder: Embedder
) -> None:
    filler = " ".join(f"filler{i}" for i in range(30))
    long = Document("long", f"{filler} Photosynthesis converts sunlight into sugar in chloroplasts.")
    short = Document("short", "Grilled steak rests before slicing.")
    backend = EmbeddedBackend(tmp_path, "idx")
    splitter = PassageSplitter(words, PassageOptions(tokens=8, overlap=2))
    seen: list[tuple[int, int]] = []
    report = index_documents(
        backend, embedder, [long, short], passages=splitter, progress=lambda d, t: seen.append((d, t))
    )
    assert report.passages == len(splitter.spans(long.text)) + 1 == 7 and report.bulk.written == 2
    assert seen[-1] == (2, 2)
    info = backend.index_info()
    assert info is not None and info.passages == "8/2 tokens"
    hits = backend.knn(embedder.embed_query("how do plants make sugar from light"), 2)
    assert hits[0].document.id == "long" and hits[0].passage is not None
    assert "chloroplasts" in long.text[hits[0].passage.start : hits[0].passage.end]
    with pytest.raises(IndexMismatchError, match="one vector per document"):
        index_documents(backend, embedder, [short])
