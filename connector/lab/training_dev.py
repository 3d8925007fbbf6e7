"""What `train-reranker` measures on its dev split: raw scores (last layer, or each layerwise layer), the
evaluator the trainer calls every eval_steps, and the per-layer tuning written into hybrid_rerank.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.lab.evaluation import evaluate_run
from hybrid_rerank.connector.lab.layerwise import score_layers
from hybrid_rerank.connector.lab.training_data import tune_interpolation


def score_rankings(
    model: Any,
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    documents: Mapping[str, Document],
    queries: Mapping[str, str],
    batch_size: int,
) -> dict[str, dict[str, float]]:
    pairs = [(queries[q], documents[d].full_text) for q, ranked in rankings.items() for d, _ in ranked]
    import torch

    raw = model.predict(  # raw logits, as the reranking core returns them
        pairs,
        batch_size=batch_size,
        show_progress_bar=False,
        convert_to_numpy=True,
        activation_fn=torch.nn.Identity(),
    )
    flat = iter(np.asarray(raw).reshape(len(pairs), -1)[:, 0].tolist())
    return {q: {d: float(next(flat)) for d, _ in ranked} for q, ranked in rankings.items()}


def tune_layers(
    model: Any,
    layers: Sequence[int],
    dev_first: Mapping[str, Sequence[tuple[str, float]]],
    documents: Mapping[str, Document],
    benchmark: Any,
    batch_size: int,
) -> dict[str, Any]:
    """Per listed layer: the rerank-alone dev nDCG@10 and the tuned interpolation weight (torch fp32)."""
    scores = score_layers(model, dev_first, documents, benchmark.queries, layers, batch_size)
    ndcg: dict[str, float] = {}
    weights: dict[str, float] = {}
    for layer in layers:
        weight, curve = tune_interpolation(scores[layer], dev_first, benchmark.qrels)
        ndcg[str(layer)], weights[str(layer)] = float(curve[1.0]), float(weight)
    return {
        "layers": list(layers),
        "dev_ndcg@10": ndcg,
        "interpolation_weights": weights,
        "scored_with": f"torch fp32, max_length {model.max_seq_length}",
    }


class DevEvaluator(BaseEvaluator):
    """nDCG@10 of reranking the dev queries' hybrid top-N, the first stage's, and the spread of the scores
    (a collapsing model shows a shrinking spread before its nDCG falls)."""

    def __init__(
        self,
        first: Mapping[str, Sequence[tuple[str, float]]],
        documents: Mapping[str, Document],
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        batch_size: int,
        layers: Sequence[int] = (),
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.layers = list(layers)
        self.primary_metric = "dev_ndcg@10"
        self.greater_is_better = True
        self.first, self.documents, self.queries, self.batch_size = first, documents, queries, batch_size
        self.qrels = {q: qrels[q] for q in first}

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        if self.layers:  # every listed layer from one forward; the last listed one is the primary metric
            by_layer = score_layers(
                model, self.first, self.documents, self.queries, self.layers, self.batch_size
            )
            scores = by_layer[self.layers[-1]]
        else:
            was_training = model.training
            scores = score_rankings(model, self.first, self.documents, self.queries, self.batch_size)
            model.train(was_training)
            by_layer = {}
        values = np.array([v for s in scores.values() for v in s.values()])
        first_run = {q: [d for d, _ in r] for q, r in self.first.items()}
        metrics = {
            "dev_ndcg@10": self._ndcg(scores),
            "dev_first_ndcg@10": evaluate_run(first_run, self.qrels)["ndcg@10"],
            "dev_score_std": float(values.std()),
        }
        metrics.update({f"dev_layer{k}_ndcg@10": self._ndcg(s) for k, s in by_layer.items()})
        return metrics

    def _ndcg(self, scores: Mapping[str, Mapping[str, float]]) -> float:
        run = {q: sorted(s, key=lambda d: -s[d]) for q, s in scores.items()}
        return evaluate_run(run, self.qrels)["ndcg@10"]
