"""The reranking core, free of Celery: a cross-encoder reads query and document together and scores them.

Long documents are split into overlapping passages that each fit the model's window beside the query, and a
document is scored by its best passage (MaxP, Dai & Callan 2019), so relevant text past the first few hundred
tokens is not cut away. The model loads once per scorer and is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_rerank.workers.errors import ModelLoadError, describe_exception
from hybrid_rerank.workers.protocol import Candidate, max_readable_chars
from hybrid_rerank.workers.runtime.batching import PairRunner, encoded_rows, run_batched
from hybrid_rerank.workers.runtime.models import (
    ModelSource,
    interpolation_weight,
    load_tokenizer,
    model_folder,
    model_window,
    quiet_transformers,
    resolve_model,
)
from hybrid_rerank.workers.runtime.runners import RUNNER_KINDS, RunnerKind, make_runner

# The query keeps at most this share of the window; the document gets the rest.
MAX_QUERY_SHARE = 0.5
# Consecutive passages overlap by this share of a passage, so no sentence is cut at every boundary.
PASSAGE_OVERLAP = 0.25


@dataclass(frozen=True)
class ScoredCandidate:
    id: str
    score: float


@dataclass(frozen=True)
class LoadedModel:
    tokenizer: Any
    runner: PairRunner
    folder: Path
    interpolation_weight: float | None  # from the folder's hybrid_rerank.json, tuned for this model


class CrossEncoderScorer:
    """Scores (query, document) pairs with a sentence-transformers `CrossEncoder`."""

    def __init__(
        self,
        model_name: str,
        *,
        max_length: int = 256,
        batch_size: int = 16,
        token_budget: int = 8192,
        device: str | None = None,
        backend: RunnerKind = "auto",
        max_passages: int = 4,
        threads: int | None = None,
        cache_dir: Path | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if backend not in RUNNER_KINDS:
            raise ModelLoadError(f"unknown rerank backend {backend!r}: use one of {', '.join(RUNNER_KINDS)}")
        if max_passages < 1:
            raise ValueError("max_passages must be at least 1")
        self.model_name = model_name
        self.source: ModelSource = resolve_model(model_name)
        self.max_length = max_length
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.device = device
        self.backend = backend
        self.max_passages = max_passages
        self.threads = threads
        self.cache_dir = cache_dir or Path("data") / "onnx-cache"
        self.trust_remote_code = trust_remote_code
        self._model: LoadedModel | None = None

    @property
    def max_chars(self) -> int:
        """Characters of a document the model can read at most; the rest is cut before tokenizing."""
        return max_readable_chars(self.max_length, self.max_passages)

    @property
    def cache_key(self) -> str:
        """Everything that changes a score, for the score cache."""
        return f"{self.model_name}|{self.backend}|{self.max_length}|{self.max_passages}"

    @property
    def interpolation_weight(self) -> float | None:
        """The weight the model was tuned with (its folder's hybrid_rerank.json); loads the model."""
        return self.load().interpolation_weight

    @property
    def description(self) -> str:
        runner = self._model.runner.description if self._model is not None else self.backend
        return f"{self.model_name} ({self.source.origin}; {runner}, max_length {self.max_length})"

    def load(self) -> LoadedModel:
        """Load the model now (idempotent); raises ModelLoadError with what to do when it cannot."""
        if self._model is None:
            try:
                quiet_transformers()
                folder = model_folder(self.source)
                window = model_window(folder)
                if window is not None and self.max_length > window:
                    self.max_length = window  # truncation follows what the model can read, not the setting
                runner = make_runner(
                    folder,
                    self.backend,
                    cache_dir=self.cache_dir,
                    device=self.device,
                    threads=self.threads,
                    trust_remote_code=self.trust_remote_code,
                )
                tokenizer = load_tokenizer(folder, trust_remote_code=self.trust_remote_code)
                self._model = LoadedModel(tokenizer, runner, folder, interpolation_weight(folder))
            except Exception as exc:  # any loader failure becomes one actionable error
                raise ModelLoadError(
                    f"could not load rerank model {self.model_name!r} from {self.source.origin}: "
                    f"{describe_exception(exc)}. Set RERANK_MODEL to a local cross-encoder folder "
                    "(e.g. one saved by `CrossEncoder.save_pretrained`), or to a hub id already in the local "
                    "cache, or set RERANK_MODEL=none to turn reranking off."
                ) from exc
        return self._model

    def passages(self, query: str, text: str) -> list[str]:
        """`text` cut into passages that fit the window beside `query` (the whole text when it fits)."""
        tokenizer = self.load().tokenizer
        text = text[: self.max_chars]
        window = self.max_length - tokenizer.num_special_tokens_to_add(pair=True)
        query_tokens = len(tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
        budget = max(window - min(query_tokens, int(window * MAX_QUERY_SHARE)), 1)
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
        if len(offsets) <= budget:
            return [text]
        step = max(int(budget * (1 - PASSAGE_OVERLAP)), 1)
        pieces: list[str] = []
        for start in range(0, len(offsets), step):
            end = min(start + budget, len(offsets))
            pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
            if end == len(offsets) or len(pieces) == self.max_passages:
                break
        return pieces

    def score(self, query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
        """One score per candidate, in the input order; higher is more relevant."""
        if not candidates:
            return []
        model = self.load()
        passages: list[str] = []
        owners: list[int] = []
        for index, candidate in enumerate(candidates):
            for passage in self.passages(query, candidate.text):
                passages.append(passage)
                owners.append(index)
        raw = self.score_pairs([query] * len(passages), passages, model)
        best: list[float] = [float("-inf")] * len(candidates)
        for owner, value in zip(owners, raw.tolist(), strict=True):
            best[owner] = max(best[owner], float(value))
        return [ScoredCandidate(c.id, s) for c, s in zip(candidates, best, strict=True)]

    def score_pairs(
        self, queries: Sequence[str], texts: Sequence[str], model: LoadedModel | None = None
    ) -> Any:
        """Raw scores of (query, text) pairs, each truncated to the window: sorted by length, packed into
        batches up to the token budget, padded per batch, returned in the input order (a float32 array)."""
        model = model or self.load()
        encoded = model.tokenizer(
            list(queries), list(texts), truncation=True, max_length=self.max_length, verbose=False
        )
        rows = encoded_rows(encoded, len(queries))
        pad_id = model.tokenizer.pad_token_id or 0
        return run_batched(model.runner, rows, self.token_budget, self.batch_size, pad_id)
