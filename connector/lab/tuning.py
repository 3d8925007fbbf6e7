"""The interpolation weight of a rerank model: its dev rankings scored through the reranking core, and
`hybrid-rerank tune-reranker`, which tunes the weight again for the current settings and writes it into the
model folder's hybrid_rerank.json (whence a worker's reply carries it to the searching side). The weight
written is the safe one (`safe_interpolation`): no larger than the tuned one, nor than where the
document-disjoint dev queries start to fall below the first stage beyond noise; beside it, the fingerprint
of the training domain (`connector/domain.py`), under which a query near the training queries may get the
tuned weight back."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.domain import FINGERPRINT_KEY, fingerprint
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.factory import search_options
from hybrid_rerank.connector.lab.evaluation import hybrid_rankings, prepare_benchmark
from hybrid_rerank.connector.lab.safe_interpolation import default_weight, per_query_curve
from hybrid_rerank.connector.lab.training_data import split_dev, tune_interpolation
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.factory import make_scorer
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.models import RERANK_METADATA
from hybrid_rerank.workers.scorer import CrossEncoderScorer

Progress = Callable[[str, int, int], None]


def rerank_rankings(
    scorer: CrossEncoderScorer,
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    documents: Mapping[str, Document],
    queries: Mapping[str, str],
    progress: Progress | None = None,
) -> dict[str, dict[str, float]]:
    """Scores from the reranking core, as the pipeline computes them."""
    scores: dict[str, dict[str, float]] = {}
    for done, (query_id, ranked) in enumerate(rankings.items(), start=1):
        candidates = [Candidate(d, documents[d].full_text) for d, _ in ranked]
        scores[query_id] = {s.id: s.score for s in scorer.score(queries[query_id], candidates)}
        if progress:
            progress("scoring dev queries", done, len(rankings))
    return scores


def retune_interpolation(
    settings: Settings,
    folder: Path,
    model_dir: Path,
    *,
    split: str = "train",
    dev_queries: int = 100,
    seed: int = 13,
    depth: int = 30,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Tune the rerank weight again on the same held-out dev queries, for the current settings (another
    max_length, passages or backend), and rewrite the model folder's hybrid_rerank.json."""
    from hybrid_rerank.workers.runtime.models import read_rerank_metadata

    prepared = prepare_benchmark(settings, folder, split, embedder=embedder, progress=progress)
    benchmark = prepared.benchmark
    train_ids, dev_ids = split_dev(list(benchmark.queries), dev_queries, seed)
    # Dev queries whose relevant documents no training query cites: the harder, more honest subset (SciFact
    # has claim pairs citing the same abstract, so a random dev query often has a twin in training).
    seen = {d for q in train_ids for d, grade in benchmark.qrels[q].items() if grade > 0}
    unseen = [q for q in dev_ids if not {d for d, g in benchmark.qrels[q].items() if g > 0} & seen]
    texts = [benchmark.queries[q] for q in dev_ids]
    vectors = prepared.embedder.embed_queries(texts)
    rankings = hybrid_rankings(prepared.backend, search_options(settings), texts, vectors, depth)
    dev_first = dict(zip(dev_ids, rankings, strict=True))
    scorer = make_scorer(settings.model_copy(update={"rerank_model": str(model_dir)}))
    assert scorer is not None
    documents = {d.id: d for d in benchmark.documents}
    dev_rerank = rerank_rankings(scorer, dev_first, documents, benchmark.queries, progress)
    weight, curve = tune_interpolation(dev_rerank, dev_first, benchmark.qrels)
    _, unseen_curve = tune_interpolation(
        {q: dev_rerank[q] for q in unseen}, {q: dev_first[q] for q in unseen}, benchmark.qrels
    )
    unseen_per_query = per_query_curve(
        {q: dev_rerank[q] for q in unseen}, {q: dev_first[q] for q in unseen}, benchmark.qrels, list(curve)
    )
    chosen, rule = default_weight(weight, unseen_per_query)
    metadata = read_rerank_metadata(model_dir)
    if len(train_ids) >= 2:  # the training queries' bi-encoder vectors: where the tuned weight holds
        train_vectors = prepared.embedder.embed_queries([benchmark.queries[q] for q in train_ids])
        metadata[FINGERPRINT_KEY] = fingerprint(train_vectors, prepared.embedder.model_name, weight)
    metadata.update(
        {
            "interpolation_weight": chosen,
            "tuned_interpolation_weight": weight,
            "interpolation_rule": rule,
            "tuned_with": {
                "max_length": settings.rerank_max_length,
                "max_passages": settings.rerank_max_passages,
                "backend": scorer.load().runner.description,
                "dev_queries": len(dev_ids),
                "depth": depth,
            },
            "retuned_curve": {str(k): v for k, v in curve.items()},
            "unseen_document_dev_queries": len(unseen),
            "unseen_document_dev_curve": {str(k): v for k, v in unseen_curve.items()},
        }
    )
    (model_dir / RERANK_METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return {
        "interpolation_weight": chosen,
        "tuned_weight": weight,
        "rule": rule,
        "curve": curve,
        "unseen_curve": unseen_curve,
        "unseen": len(unseen),
    }
