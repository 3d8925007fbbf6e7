"""The reranking core, free of Celery: one scorer interface over every kind of reranker
(`runtime.kinds`): a cross-encoder reads query and document together and gives a logit; an LLM reranker
reads them in a prompt and answers yes or no (`runtime.llm`); a remote one asks an HTTP rerank API
(`runtime.remote`). The kind comes from the model folder's config.json unless RERANK_KIND says.

Long documents are split into overlapping passages that each fit the model's window beside the query, and a
document is scored by its best passage (MaxP, Dai & Callan 2019), so relevant text past the first few hundred
tokens is not cut away. The model loads once per scorer and is reused; where it runs (device, precision,
threads) is logged once, at load.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid_rerank.workers.errors import ModelLoadError, describe_exception
from hybrid_rerank.workers.protocol import Candidate, max_readable_chars
from hybrid_rerank.workers.runtime.batching import PairRunner, encoded_rows, run_batched
from hybrid_rerank.workers.runtime.cross_encoder import (
    cut_interpolation_weight,
    load_cross_encoder,
)
from hybrid_rerank.workers.runtime.kinds import (
    SCORER_KINDS,
    LocalKind,
    ScorerKind,
    check_tokenizer,
    read_config,
    resolve_kind,
)
from hybrid_rerank.workers.runtime.llm import PromptEncoder, PromptName, prompt_format
from hybrid_rerank.workers.runtime.models import (
    ModelSource,
    interpolation_weight,
    load_tokenizer,
    model_folder,
    model_window,
    resolve_model,
)
from hybrid_rerank.workers.runtime.pair_tokens import PairEncoder, TextTokens
from hybrid_rerank.workers.runtime.passages import PASSAGE_OVERLAP as PASSAGE_OVERLAP  # tests read it here
from hybrid_rerank.workers.runtime.passages import (
    passage_budget,
    window_spans,
    window_texts,
    window_tokens,
)
from hybrid_rerank.workers.runtime.runners import RUNNER_KINDS, TORCH_KINDS, RunnerKind

REMOTE_MODULE = "hybrid_rerank.workers.runtime.remote"
WARM_UP_ROWS = 16  # pairs in the warm-up batch at load (at most the batch size)
log = logging.getLogger("hybrid_rerank.workers")


@dataclass(frozen=True)
class ScoredCandidate:
    id: str
    score: float


@dataclass(frozen=True)
class RemoteOptions:
    """Where a `remote` kind sends its requests (RERANK_REMOTE_*)."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log line
    dialect: str = "tei"
    timeout_s: float = 10.0
    retries: int = 2
    max_batch: int = 96
    model: str | None = None


@dataclass(frozen=True)
class LoadedModel:
    tokenizer: Any  # None for a remote kind
    runner: PairRunner
    folder: Path | None  # None for a remote kind
    interpolation_weight: float | None  # from the folder's hybrid_rerank.json, tuned for this model
    kind: LocalKind | str = "cross-encoder"
    prompt: PromptEncoder | None = None  # LLM kinds: how a pair becomes one prompt
    remote: Any = None  # the remote kind's scorer (`runtime.remote.RemoteScorer`), imported only when used
    pairs: PairEncoder | None = None  # cross-encoders: pair inputs from each distinct text tokenized once


class _RemoteRunner:
    """The runner slot of a remote kind: it names the endpoint; the texts go to the API, never token ids."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __call__(self, batch: Any) -> Any:
        raise TypeError("a remote reranker scores texts, not token ids")


class CrossEncoderScorer:
    """Scores (query, document) pairs with a reranker of any kind (`kind`: auto, cross-encoder, llm, remote);
    the name stays from when cross-encoders were the only kind (`RerankScorer` is the same class)."""

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
        kind: ScorerKind = "auto",
        llm_prompt: PromptName = "auto",
        llm_instruction: str | None = None,
        remote: RemoteOptions | None = None,
        cutoff_layer: int | None = None,
    ) -> None:
        if backend not in RUNNER_KINDS:
            raise ModelLoadError(f"unknown rerank backend {backend!r}: use one of {', '.join(RUNNER_KINDS)}")
        if kind not in SCORER_KINDS:
            raise ModelLoadError(f"unknown rerank kind {kind!r}: use one of {', '.join(SCORER_KINDS)}")
        if kind == "remote" and remote is None:
            raise ModelLoadError("RERANK_KIND=remote needs RERANK_REMOTE_URL (the rerank API's base URL)")
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
        self.kind = kind
        self.llm_prompt = llm_prompt
        self.llm_instruction = llm_instruction
        self.remote = remote
        self.cutoff_layer = cutoff_layer  # layerwise early exit (RERANK_CUTOFF_LAYER); None: every layer
        self._model: LoadedModel | None = None

    @property
    def max_chars(self) -> int:
        """Characters of a document the model can read at most; the rest is cut before tokenizing."""
        return max_readable_chars(self.max_length, self.max_passages)

    @property
    def cache_key(self) -> str:
        """Everything that changes a score, for the score cache."""
        key = f"{self.model_name}|{self.backend}|{self.max_length}|{self.max_passages}"
        if self.kind == "remote":
            return str(self.load().remote.cache_key)
        if self.kind != "auto" or self.llm_prompt != "auto" or self.llm_instruction:
            key += f"|{self.kind}|{self.llm_prompt}|{self.llm_instruction or ''}"
        if self.cutoff_layer is not None:
            key += f"|layer{self.cutoff_layer}"
        return key

    @property
    def interpolation_weight(self) -> float | None:
        """The weight the model was tuned with (its folder's hybrid_rerank.json); loads the model."""
        return self.load().interpolation_weight

    @property
    def description(self) -> str:
        if self._model is None:
            return f"{self.model_name} ({self.source.origin}; {self.kind} {self.backend})"
        if self._model.remote is not None:
            return f"{self.model_name} ({self._model.runner.description})"
        runner = self._model.runner.description
        return (
            f"{self.model_name} ({self.source.origin}; {self._model.kind}, {runner}, "
            f"max_length {self.max_length})"
        )

    def load(self) -> LoadedModel:
        """Load the model now (idempotent); raises ModelLoadError with what to do when it cannot."""
        if self._model is None:
            if self.kind == "remote":
                self._model = self._load_remote()
            else:
                self._model = self._warm_up(self._load_local())
            log.info(
                "rerank model %s: kind %s, %s, %s threads",
                self.model_name,
                self._model.kind,
                self._model.runner.description,
                self.threads or "default",
            )
        return self._model

    def _warm_up(self, model: LoadedModel) -> LoadedModel:
        """One full batch at load, as wide as a request's widest, so the first request runs as fast as the
        tenth (onnxruntime and torch allocate their buffers and prepare kernels on a first run)."""
        rows = min(self.batch_size, WARM_UP_ROWS)
        self.score_pairs(["warm up"] * rows, [" ".join(["warm"] * self.max_length)] * rows, model)
        return model

    def _load_local(self) -> LoadedModel:
        try:
            folder = model_folder(self.source)
            kind = resolve_kind(folder, self.kind, trust_remote_code=self.trust_remote_code)
            if kind == "llm" and self.backend not in TORCH_KINDS:
                raise ModelLoadError(
                    f"RERANK_BACKEND={self.backend} is for cross-encoders; an LLM reranker runs in torch: "
                    "set RERANK_BACKEND=auto, torch or torch-bf16"
                )
            window = model_window(folder)
            if window is not None and self.max_length > window:
                self.max_length = window  # truncation follows what the model can read, not the setting
            if kind == "llm":
                return self._load_llm(folder)
            check_tokenizer(folder)  # before the weights, which take longer to load
            tokenizer, runner, pairs = load_cross_encoder(
                folder,
                self.backend,
                cache_dir=self.cache_dir,
                device=self.device,
                threads=self.threads,
                trust_remote_code=self.trust_remote_code,
                cutoff_layer=self.cutoff_layer,
            )
            weight = cut_interpolation_weight(folder, self.cutoff_layer)
            return LoadedModel(tokenizer, runner, folder, weight, pairs=pairs)
        except ModelLoadError as exc:  # already says what to change
            raise type(exc)(
                f"could not load rerank model {self.model_name!r} from {self.source.origin}: {exc}"
            ) from exc
        except Exception as exc:  # any other loader failure becomes one actionable error
            raise ModelLoadError(
                f"could not load rerank model {self.model_name!r} from {self.source.origin}: "
                f"{describe_exception(exc)}. Set RERANK_MODEL to a local cross-encoder folder "
                "(e.g. one saved by `CrossEncoder.save_pretrained`), or to a hub id already in the local "
                "cache, or set RERANK_MODEL=none to turn reranking off."
            ) from exc

    def _load_llm(self, folder: Path) -> LoadedModel:
        from hybrid_rerank.workers.runtime.llm import LlmRunner
        from hybrid_rerank.workers.runtime.runners import torch_placement

        check_tokenizer(folder)
        tokenizer = load_tokenizer(folder, trust_remote_code=self.trust_remote_code)
        fmt = prompt_format(self.llm_prompt, read_config(folder).get("model_type"), self.llm_instruction)
        prompt = PromptEncoder(tokenizer, fmt)
        prompt.check_room(self.max_length)
        device, precision = torch_placement(self.backend, self.device, llm=True)
        runner = LlmRunner(
            folder,
            (prompt.no_id, prompt.yes_id),
            device=device,
            precision=precision,
            threads=self.threads,
            trust_remote_code=self.trust_remote_code,
            cutoff_layer=self.cutoff_layer,
        )
        runner.description += f", {fmt.name} prompt"
        return LoadedModel(tokenizer, runner, folder, interpolation_weight(folder), "llm", prompt)

    def _load_remote(self) -> LoadedModel:
        assert self.remote is not None  # __init__ refuses a remote kind without options
        try:
            module = importlib.import_module(REMOTE_MODULE)
        except ImportError as exc:
            raise ModelLoadError(
                f"RERANK_KIND=remote needs {REMOTE_MODULE}, which this installation lacks "
                f"({describe_exception(exc)}): upgrade hybrid-rerank or use a local model"
            ) from exc
        options = self.remote
        remote = module.RemoteScorer(
            options.base_url,
            options.api_key,
            options.dialect,
            options.timeout_s,
            options.retries,
            options.max_batch,
            options.model,
            name=self.model_name,
        ).load()
        return LoadedModel(None, _RemoteRunner(str(remote.description)), None, None, "remote", remote=remote)

    def passages(self, query: str, text: str) -> list[str]:
        """`text` cut into passages that fit the window beside `query` (the whole text when it fits)."""
        model = self.load()
        text = text[: self.max_chars]
        if model.remote is not None:  # a remote API cuts texts to its own window
            return [text]
        if model.pairs is not None:
            query_tokens, tokens = model.pairs.tokens([query, text])
            budget = passage_budget(self.max_length, model.pairs.added, len(query_tokens.ids))
            offsets = tokens.offsets.tolist()
        else:
            tokenizer = model.tokenizer
            added = model.prompt.overhead if model.prompt else tokenizer.num_special_tokens_to_add(pair=True)
            query_length = len(tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
                "offset_mapping"
            ]
            budget = passage_budget(self.max_length, added, query_length)
        return window_texts(text, offsets, window_spans(len(offsets), budget, self.max_passages))

    def score(self, query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
        """One score per candidate, in the input order; higher is more relevant."""
        if not candidates:
            return []
        model = self.load()
        if model.remote is not None:
            return list(model.remote.score(query, candidates))
        if model.pairs is not None:
            raw, owners = self._score_passages(query, [c.text for c in candidates], model, model.pairs)
        else:
            passages: list[str] = []
            owners = []
            for index, candidate in enumerate(candidates):
                for passage in self.passages(query, candidate.text):
                    passages.append(passage)
                    owners.append(index)
            raw = self.score_pairs([query] * len(passages), passages, model)
        best: list[float] = [float("-inf")] * len(candidates)
        for owner, value in zip(owners, raw.tolist(), strict=True):
            best[owner] = max(best[owner], float(value))
        return [ScoredCandidate(c.id, s) for c, s in zip(candidates, best, strict=True)]

    def _score_passages(
        self, query: str, texts: Sequence[str], model: LoadedModel, pairs: PairEncoder
    ) -> tuple[Any, list[int]]:
        """Raw scores of every passage of `texts` beside `query`, and the text each came from; each distinct
        text is tokenized once (and not again while the cache keeps it)."""
        texts = [t[: self.max_chars] for t in texts]
        query_tokens, *documents = pairs.tokens([query, *texts])
        budget = passage_budget(self.max_length, pairs.added, len(query_tokens.ids))
        pieces: list[TextTokens] = []
        owners: list[int] = []
        for index, (text, tokens) in enumerate(zip(texts, documents, strict=True)):
            spans = window_spans(len(tokens.ids), budget, self.max_passages)
            pieces += (
                [tokens]
                if len(spans) == 1 and spans[0][1] == len(tokens.ids)
                else window_tokens(pairs, text, tokens, spans)
            )
            owners += [index] * len(spans)
        rows = pairs.pair_rows([query_tokens] * len(pieces), pieces, self.max_length)
        return self._run_rows(rows, model), owners

    def _run_rows(self, rows: Sequence[dict[str, Any]], model: LoadedModel) -> Any:
        return run_batched(model.runner, rows, self.token_budget, self.batch_size, self._pad_id(model))

    @staticmethod
    def _pad_id(model: LoadedModel) -> int:
        return model.pairs.pad_id if model.pairs is not None else int(model.tokenizer.pad_token_id or 0)

    def score_pairs(
        self, queries: Sequence[str], texts: Sequence[str], model: LoadedModel | None = None
    ) -> Any:
        """Raw scores of (query, text) pairs, each truncated to the window: sorted by length, packed into
        batches up to the token budget, padded per batch (on the left for LLMs), returned in the input order
        (a float32 array)."""
        model = model or self.load()
        if model.remote is not None:
            raise TypeError("a remote reranker scores one query's candidates at a time: call score()")
        if model.prompt is not None:
            return run_batched(
                model.runner,
                model.prompt.rows(queries, texts, self.max_length),
                self.token_budget,
                self.batch_size,
                model.prompt.pad_id,
                model.prompt.pool,
                left_pad=True,
            )
        if model.pairs is not None:
            distinct = [*dict.fromkeys(queries), *texts]
            by_text = dict(zip(distinct, model.pairs.tokens(distinct), strict=True))
            rows = model.pairs.pair_rows(
                [by_text[q] for q in queries], [by_text[t] for t in texts], self.max_length
            )
            return self._run_rows(rows, model)
        encoded = model.tokenizer(
            list(queries), list(texts), truncation=True, max_length=self.max_length, verbose=False
        )
        return self._run_rows(encoded_rows(encoded, len(queries)), model)


RerankScorer = CrossEncoderScorer
