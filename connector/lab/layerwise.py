"""The layerwise objective of `train-reranker`: the model's own head (BERT: pooler, dropout, classifier;
RoBERTa / XLM-RoBERTa: its classification head) applied to the [CLS] state after layer k, for each listed k,
with the listwise loss averaged over those layers. A model trained so keeps a usable score when it is cut to
its first k layers (the cut keeps that same head), which is what `RERANK_CUTOFF_LAYER` and
`export-reranker --layers` do."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
from sentence_transformers.util import batch_to_device

from hybrid_rerank.connector.documents import Document

Head = Callable[[torch.Tensor], torch.Tensor]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LayerwiseUnsupportedError(ValueError):
    """The architecture's classification head is not one this objective knows how to read per layer."""


def transformer_of(model: Any) -> Any:
    """The Hugging Face sequence-classification model inside a sentence-transformers CrossEncoder."""
    return model[0].model


def classification_head(transformer: Any) -> Head:
    """The head that turns a layer's hidden states (batch, tokens, hidden) into logits (batch, labels),
    exactly as the full model applies it to its last layer."""
    model_type = getattr(transformer.config, "model_type", "")
    bert = getattr(transformer, "bert", None)
    if bert is not None and getattr(bert, "pooler", None) is not None:
        return lambda hidden: transformer.classifier(transformer.dropout(bert.pooler(hidden)))
    if model_type in ("roberta", "xlm-roberta"):
        return lambda hidden: transformer.classifier(hidden)
    raise LayerwiseUnsupportedError(
        f"the layerwise objective reads BERT-family (pooler + classifier) and RoBERTa-family heads; "
        f"{type(transformer).__name__} ({model_type or 'unknown type'}) is neither: train with "
        "--layerwise none"
    )


def layer_count(transformer: Any) -> int:
    return int(transformer.config.num_hidden_layers)


def layer_logits(transformer: Any, inputs: Mapping[str, Any], layers: Sequence[int]) -> torch.Tensor:
    """(len(layers), batch): the first logit of the head read after each listed layer, from one forward."""
    head = classification_head(transformer)
    arguments = {name: inputs[name] for name in MODEL_INPUTS if name in inputs}
    outputs = transformer.base_model(**arguments, output_hidden_states=True)
    hidden = outputs.hidden_states  # [0] is the embeddings, [k] the output of layer k
    return torch.stack([head(hidden[k])[:, 0] for k in layers])


class LayerwiseRankingLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss computed at each listed layer and averaged."""

    def __init__(self, model: Any, layers: Sequence[int], num_negatives: int) -> None:
        super().__init__(model, num_negatives=num_negatives)
        self.layers = list(layers)
        classification_head(transformer_of(model))  # fail before training, not at the first step

    def call_model_with_pairs(
        self, pairs: list[list[str]], prompt: str | None = None, task: str | None = None
    ) -> torch.Tensor:
        inputs = batch_to_device(self.model.preprocess(pairs, prompt=prompt, task=task), self.model.device)
        return layer_logits(transformer_of(self.model), inputs, self.layers)

    def calculate_loss(self, logits: torch.Tensor, batch_size: int) -> torch.Tensor:
        """`logits` is the list of per-column (layers, batch) scores the parent's forward collects."""
        columns: list[torch.Tensor] = list(logits)
        return torch.stack([self._listwise([c[i] for c in columns]) for i in range(len(self.layers))]).mean()

    def layer_losses(self, inputs: list[list[str]]) -> list[float]:
        """The loss at each listed layer for one batch of (query, positive, negatives...) columns, no dropout
        and no in-batch negatives (they are sampled at random)."""
        with torch.no_grad():
            columns = [self.call_model_with_columns(inputs[0], column) for column in inputs[1:]]
        return [float(self._listwise([c[i] for c in columns])) for i in range(len(self.layers))]

    def _listwise(self, columns: list[torch.Tensor]) -> torch.Tensor:
        """Softmax cross-entropy with the positive (column 0) as the label, as the parent computes it."""
        logits = torch.stack(columns, dim=1)
        if self.activation_fn:
            logits = self.activation_fn(logits)
        if self.scale:
            logits = logits * self.scale
        labels = torch.zeros(logits.shape[0], device=logits.device, dtype=torch.long)
        loss: torch.Tensor = self.cross_entropy_loss(logits, labels)
        return loss


def score_layers(
    model: Any,
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    documents: Mapping[str, Document],
    queries: Mapping[str, str],
    layers: Sequence[int],
    batch_size: int,
) -> dict[int, dict[str, dict[str, float]]]:
    """{layer: {query: {doc: raw logit}}} for each listed layer, in eval mode, from one forward per batch."""
    pairs = [[queries[q], documents[d].full_text] for q, ranked in rankings.items() for d, _ in ranked]
    transformer = transformer_of(model)
    was_training = transformer.training
    transformer.eval()
    chunks: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            inputs = batch_to_device(model.preprocess(pairs[start : start + batch_size]), model.device)
            chunks.append(layer_logits(transformer, inputs, layers).float().cpu().numpy())
    transformer.train(was_training)
    flat = np.concatenate(chunks, axis=1) if chunks else np.zeros((len(layers), 0))
    scores: dict[int, dict[str, dict[str, float]]] = {}
    for row, layer in enumerate(layers):
        values = iter(flat[row].tolist())
        scores[layer] = {q: {d: float(next(values)) for d, _ in ranked} for q, ranked in rankings.items()}
    return scores
