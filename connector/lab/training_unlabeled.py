"""`train-reranker CORPUS --unlabeled`: adapt a cross-encoder to a corpus with no queries and no qrels.

Training pseudo-queries come from the corpus alone (a title for its abstract, a sentence for the rest of its
document) with hard negatives from our own hybrid recall, as in the labelled mode. The dev split is a set of
held-out documents: each gives one pseudo-query and is indexed *without* that text, so neither the first
stage nor the reranker finds it by copying the query; no training pseudo-query comes from those documents.
The dev split picks the checkpoint and tunes the interpolation weight.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.connector.documents import load_documents
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.evaluation import (
    Benchmark,
    PreparedBenchmark,
    cached_embeddings,
    ensure_eval_index,
    eval_index_name,
)
from hybrid_rerank.connector.lab.training_data import TrainingConfig, hold_out_documents
from hybrid_rerank.connector.settings import Settings

Progress = Callable[[str, int, int], None]


def corpus_path(folder: Path) -> Path:
    """A BEIR folder's corpus.jsonl, or the corpus file itself."""
    candidate = folder / "corpus.jsonl" if folder.is_dir() else folder
    if not candidate.is_file():
        raise ConfigurationError(
            f"no corpus found at {folder}: give a corpus file or a folder with corpus.jsonl"
        )
    return candidate


def prepare_unlabeled(
    settings: Settings,
    folder: Path,
    config: TrainingConfig,
    rng: random.Random,
    *,
    backend: Backend | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
) -> PreparedBenchmark:
    """The corpus with `config.dev_queries` documents held out as pseudo-query dev (cut and re-embedded),
    indexed under its own evaluation index; the returned benchmark's queries and qrels are that dev split."""
    from hybrid_rerank.connector.factory import make_embedder, open_backend

    original = load_documents(corpus_path(folder)).documents
    if len(original) < 4:
        raise ConfigurationError(f"{folder} holds {len(original)} documents; --unlabeled needs at least 4")
    dev_count = min(config.dev_queries, len(original) // 4)  # most of the corpus stays for training
    corpus, queries, qrels = hold_out_documents(original, dev_count, rng)
    if not queries:
        raise ConfigurationError(f"no document of {folder} yields a pseudo-query (titles or 3+ sentences)")
    embedder = embedder or make_embedder(settings)
    vectors, cache_hit = cached_embeddings(  # the uncut corpus: shared with `eval` and earlier runs
        embedder,
        original,
        settings.data_dir / "embedding-cache",
        (lambda done, total: progress("embedding corpus", done, total)) if progress else None,
    )
    position = {doc.id: row for row, doc in enumerate(corpus)}
    cut = [doc for doc in corpus if f"pseudo-dev-{doc.id}" in queries]
    vectors = vectors.copy()
    vectors[[position[doc.id] for doc in cut]] = embedder.embed_documents(cut)
    benchmark = Benchmark(f"{folder.name}-unlabeled", corpus, queries, qrels)
    backend = backend or open_backend(settings, eval_index_name(benchmark))
    built = ensure_eval_index(backend, embedder, corpus, vectors)
    return PreparedBenchmark(benchmark, backend, embedder, cache_hit, built)
