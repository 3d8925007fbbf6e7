"""Pair inputs assembled from each distinct text tokenized once equal the tokenizer's own pair call with
`truncation=True`, on BERT, XLM-R, ModernBERT and the shipped model's tokenizers, read through transformers
or from tokenizer.json alone; and the scorer's scores do not change."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.models import RECIPE_FILE
from hybrid_rerank.workers.runtime.onnx_export import save_backend_tokenizer
from hybrid_rerank.workers.runtime.pair_tokens import (
    PairEncoder,
    longest_first,
    pair_encoder_from_folder,
    pair_encoder_from_transformers,
)
from hybrid_rerank.workers.runtime.passages import window_spans, window_texts, window_tokens
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.tiny_models import (
    build_tiny_modernbert_cross_encoder,
    build_tiny_xlmr_cross_encoder,
    demo_texts,
)

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "xlm-roberta": build_tiny_xlmr_cross_encoder,
    "modernbert": build_tiny_modernbert_cross_encoder,
}


@pytest.fixture(scope="module")
def folders(tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from hybrid_rerank.workers.models import SCIFACT_RERANKER_DIR

    root = tmp_path_factory.mktemp("pair-tokens")
    built = {name: build(root / name) for name, build in BUILDERS.items()}
    return {"bert": tiny_cross_encoder_dir, "shipped": SCIFACT_RERANKER_DIR, **built}


def varied_pairs() -> list[tuple[str, str]]:
    """Short and long queries beside short and long documents, so each truncation case comes up: nothing
    cut, only the document cut, only the query cut, and both cut to share the window."""
    texts = demo_texts()
    long_query = " ".join(texts[:3])
    queries = ["moon", "why does the moon show phases", texts[5][:200], long_query]
    documents = ["sun", texts[1][:60], texts[2], " ".join(texts[3:6]), "", "Ünïcödé  spaces\tand\nbreaks!"]
    return [(q, d) for q in queries for d in documents]


def transformers_rows(tokenizer: Any, pairs: list[tuple[str, str]], max_length: int) -> list[dict[str, Any]]:
    encoded = tokenizer(
        [q for q, _ in pairs], [d for _, d in pairs], truncation=True, max_length=max_length, verbose=False
    )
    names = [n for n in ("input_ids", "token_type_ids") if n in encoded]
    return [{n: list(encoded[n][i]) for n in names} for i in range(len(pairs))]


def our_rows(encoder: PairEncoder, pairs: list[tuple[str, str]], max_length: int) -> list[dict[str, Any]]:
    queries = encoder.tokens([q for q, _ in pairs])
    documents = encoder.tokens([d for _, d in pairs])
    return [
        {n: v.tolist() for n, v in row.items()} for row in encoder.pair_rows(queries, documents, max_length)
    ]


def light_encoder(folder: Path, work: Path) -> PairEncoder:
    """The tokenizer.json reader; for XLM-R (whose tokenizer.json transformers 5 partly replaces at load)
    from a copy whose tokenizer.json export-reranker's `save_backend_tokenizer` wrote."""
    encoder = pair_encoder_from_folder(folder)
    if encoder is None:
        work.mkdir()
        shutil.copy2(folder / "tokenizer_config.json", work / "tokenizer_config.json")
        record = save_backend_tokenizer(folder, work)
        (work / RECIPE_FILE).write_text(json.dumps(record), encoding="utf-8")
        encoder = pair_encoder_from_folder(work)
    assert encoder is not None
    return encoder


@pytest.mark.parametrize("name", ["bert", "shipped", "xlm-roberta", "modernbert"])
@pytest.mark.parametrize("loader", ["transformers", "tokenizer.json"])
def test_pair_inputs_equal_the_tokenizers_own_pair_call(
    folders: dict[str, Path], name: str, loader: str, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folders[name]))
    if loader == "transformers":
        encoder = pair_encoder_from_transformers(tokenizer)
        assert encoder is not None
    else:
        assert (pair_encoder_from_folder(folders[name]) is None) == (name == "xlm-roberta")
        encoder = light_encoder(folders[name], tmp_path / "exported")
    pairs = varied_pairs()
    truncated = 0
    for max_length in (16, 33, 128, 512):
        expected = transformers_rows(tokenizer, pairs, max_length)
        assert our_rows(encoder, pairs, max_length) == expected, max_length
        truncated += sum(len(row["input_ids"]) == max_length for row in expected)
    assert truncated > 20  # the comparison covered truncation, not only pairs that fit
    assert ("token_type_ids" in expected[0]) == encoder.token_types
    assert encoder.pad_id == tokenizer.pad_token_id


def test_longest_first_cuts_the_longer_side_first_and_shares_the_window_when_both_are_long() -> None:
    assert longest_first(3, 5, 10) == (3, 5)  # fits
    assert longest_first(3, 20, 10) == (3, 7)  # the document alone is cut
    assert longest_first(20, 3, 10) == (7, 3)  # the query alone is cut
    assert longest_first(20, 30, 11) == (5, 6)  # both: an even share, the odd token to the second
    assert longest_first(30, 20, 11) == (6, 5)  # ... to the longer one


def test_each_distinct_text_is_tokenized_once_and_the_cache_is_bounded(tiny_cross_encoder_dir: Path) -> None:
    encoder = pair_encoder_from_folder(tiny_cross_encoder_dir, cache_size=3)
    assert encoder is not None
    first = encoder.tokens(["the moon", "the sun", "the moon"])
    assert first[0] is first[2]  # a repeated text within a call: tokenized once
    assert encoder.tokens(["the moon"])[0] is first[0]  # and again across calls
    encoder.tokens(["a star", "a planet", "rain"])  # three newer texts push the oldest out
    assert encoder.tokens(["the moon"])[0] is not first[0]
    assert encoder.tokens(["the moon"])[0].ids.tolist() == first[0].ids.tolist()


def test_scores_with_passages_equal_the_tokenizer_call_path(tiny_cross_encoder_dir: Path) -> None:
    scorer = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=24, max_passages=3, backend="torch")
    loaded = scorer.load()
    assert loaded.pairs is not None
    texts = demo_texts()
    candidates = [
        Candidate(str(i), t) for i, t in enumerate([texts[0], " ".join(texts[1:4]), "moon", texts[0]])
    ]
    query = "why does the moon show phases"
    ours = [s.score for s in scorer.score(query, candidates)]
    assert len(scorer.passages(query, candidates[1].text)) == 3  # long enough for several passages
    scorer._model = dataclasses.replace(loaded, pairs=None)  # the tokenizer's own pair call
    reference = [s.score for s in scorer.score(query, candidates)]
    assert ours == pytest.approx(reference, abs=1e-6)
    assert np.std(ours) > 0  # different documents, different scores


@pytest.mark.parametrize("name", ["bert", "shipped", "modernbert"])
def test_a_windows_tokens_equal_its_text_tokenized_alone(folders: dict[str, Path], name: str) -> None:
    encoder = pair_encoder_from_folder(folders[name])
    assert encoder is not None
    windows = cut_words = 0
    for text in demo_texts()[:40]:
        tokens = encoder.tokens([text])[0]
        for budget in (5, 12, 31):
            spans = window_spans(len(tokens.ids), budget, 4)
            ours = [t.ids.tolist() for t in window_tokens(encoder, text, tokens, spans)]
            alone = [
                t.ids.tolist() for t in encoder.encode(window_texts(text, tokens.offsets.tolist(), spans))
            ]
            assert ours == alone
            windows += len(spans)
            cut_words += sum(a != tokens.ids[s:e].tolist() for a, (s, e) in zip(alone, spans, strict=True))
    assert windows > 200
    assert cut_words > 10 or name == "modernbert"  # windows whose edge cuts a word came up
