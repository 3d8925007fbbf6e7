"""The reranking core, free of Celery: a cross-encoder reads query and document together and scores them.

Long documents are split into overlapping passages that each fit the model's window beside the query, and a
document is scored by its best passage (MaxP, Dai & Callan 2019), so relevant text past the first few hundred
tokens is not cut away. The model loads once per scorer and is reused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.errors import ModelLoadError, describe_exception
from connector.models import ModelSource, resolve_model
from workers.inference import (
    RUNNER_KINDS,
    PairRunner,
    RunnerKind,
    encoded_rows,
    load_tokenizer,
    make_runner,
    run_batched,
)

if TYPE_CHECKING:
    from connector.settings import Settings

# The query keeps at most this share of the window; the document gets the rest.
MAX_QUERY_SHARE = 0.5
# Consecutive passages overlap by this share of a passage, so no sentence is cut at every boundary.
PASSAGE_OVERLAP = 0.25
# Generous characters per token: text beyond what the passages can cover is never tokenized or sent.
CHARS_PER_TOKEN = 12
# A request carrying more text than this per candidate is a client bug, not a document to read.
MAX_CANDIDATE_CHARS = 1_000_000


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str


@dataclass(frozen=True)
class ScoredCandidate:
    id: str
    score: float


@dataclass(frozen=True)
class LoadedModel:
    tokenizer: Any
    runner: PairRunner
    folder: Path


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

    @classmethod
    def from_settings(cls, settings: Settings) -> CrossEncoderScorer | None:
        """The configured scorer, or None when RERANK_MODEL is off."""
        if settings.rerank_model is None:
            return None
        return cls(
            settings.rerank_model,
            max_length=settings.rerank_max_length,
            batch_size=settings.rerank_batch_size,
            token_budget=settings.rerank_token_budget,
            device=settings.rerank_device,
            backend=settings.rerank_backend,
            max_passages=settings.rerank_max_passages,
            threads=settings.rerank_threads,
            cache_dir=settings.data_dir / "onnx-cache",
            trust_remote_code=settings.trust_remote_code,
        )

    @property
    def max_chars(self) -> int:
        """Characters of a document the model can read at most; the rest is cut before tokenizing."""
        return max_readable_chars(self.max_length, self.max_passages)

    @property
    def cache_key(self) -> str:
        """Everything that changes a score, for the score cache."""
        return f"{self.model_name}|{self.backend}|{self.max_length}|{self.max_passages}"

    @property
    def description(self) -> str:
        runner = self._model.runner.description if self._model is not None else self.backend
        return f"{self.model_name} ({self.source.origin}; {runner}, max_length {self.max_length})"

    def load(self) -> LoadedModel:
        """Load the model now (idempotent); raises ModelLoadError with what to do when it cannot."""
        if self._model is None:
            try:
                from connector.embedder import quiet_transformers

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
                self._model = LoadedModel(tokenizer, runner, folder)
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


def model_folder(source: ModelSource) -> Path:
    """A local folder for the model: the folder itself, or the hub cache's snapshot (no download when
    HF_HUB_OFFLINE=1)."""
    path = Path(source.location)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source.location))


def model_window(folder: Path) -> int | None:
    """Tokens the model can read at once (position embeddings; RoBERTa-style models reserve two), or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    return positions - 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else positions


def max_readable_chars(max_length: int, max_passages: int) -> int:
    return max_length * max_passages * CHARS_PER_TOKEN


class RerankInputError(ValueError):
    """A rerank request that does not have the documented shape."""


def parse_request(payload: object) -> tuple[str, list[Candidate]]:
    """Validate the plain-JSON request a worker receives: {"query": str, "candidates": [{"id", "text"}]}."""
    if not isinstance(payload, dict):
        raise RerankInputError(f"request must be an object, got {type(payload).__name__}")
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RerankInputError("'query' must be a non-empty string")
    raw = payload.get("candidates")
    if not isinstance(raw, list):
        raise RerankInputError("'candidates' must be a list")
    if not raw:
        raise RerankInputError("'candidates' is empty: there is nothing to rerank")
    candidates: list[Candidate] = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RerankInputError(f"candidate {position} must be an object")
        doc_id, text = item.get("id"), item.get("text")
        if not isinstance(doc_id, str) or not doc_id:
            raise RerankInputError(f"candidate {position}: 'id' must be a non-empty string")
        if not isinstance(text, str):
            raise RerankInputError(f"candidate {position} ({doc_id}): 'text' must be a string")
        if len(text) > MAX_CANDIDATE_CHARS:
            raise RerankInputError(
                f"candidate {position} ({doc_id}): text is {len(text):,} characters, over the limit of "
                f"{MAX_CANDIDATE_CHARS:,}; send only what the model reads"
            )
        candidates.append(Candidate(doc_id, text))
    return query, candidates
