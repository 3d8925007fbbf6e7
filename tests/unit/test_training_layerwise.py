"""train-reranker's layerwise objective, document-disjoint dev split and label-free dev split, on the tiny
random BERT (2 layers) and small hand-made data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.lab.layerwise import LayerwiseRankingLoss, score_layers, transformer_of
from hybrid_rerank.connector.lab.training_data import (
    hold_out_documents,
    layer_plan,
    relevant_documents,
    split_dev_by_documents,
)
from hybrid_rerank.workers.runtime.onnx_export import truncate_layers

BATCH = [
    ["moon phase", "sun heat", "football goal", "python code"],  # queries
    ["the moon phase and orbit", "the sun heat and light", "the team goal in the game", "python code log"],
    ["steak rest in the oven", "bread and salt", "rain cloud wind", "heart blood pressure"],  # negatives
    ["database commit crash", "sleep and diet", "music pitch", "snake in the water"],
]


def test_document_disjoint_dev_split_keeps_queries_citing_one_document_together() -> None:
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(20)}
    qrels |= {"t1": {"shared": 1}, "t2": {"shared": 1, "d3": 1}, "t3": {"other": 1, "shared": 0}}
    for seed in range(8):
        train, dev = split_dev_by_documents(qrels, 6, seed)
        assert set(train) | set(dev) == set(qrels) and not set(train) & set(dev)
        assert len(dev) <= 6
        # no training query cites a document a dev query cites (grade 0 is not a citation)
        assert not relevant_documents(qrels, train) & relevant_documents(qrels, dev)
        assert split_dev_by_documents(qrels, 6, seed) == (train, dev)
    # t1, t2 and q3 are one group (shared, d3): they are never split
    splits = [split_dev_by_documents(qrels, 6, seed)[1] for seed in range(20)]
    assert any("t1" in dev for dev in splits)
    assert all(({"t1", "t2", "q3"} <= set(dev)) or not {"t1", "t2", "q3"} & set(dev) for dev in splits)
    assert len(split_dev_by_documents(qrels, 100, 0)[1]) <= len(qrels) // 2


def test_held_out_documents_are_indexed_without_their_pseudo_query() -> None:
    body = (
        "Vitamin D is made in the skin when sunlight falls on it. Low levels of vitamin D were linked to "
        "more hip fractures in older women. The effect held after adjusting for age and weight in the "
        "cohort. Results were published in a journal in the year 2010."
    )
    documents = [Document(id=f"d{i}", title=f"Title number {i}", text=body) for i in range(10)]
    corpus, queries, qrels = hold_out_documents(documents, 4, random.Random(1))
    assert len(queries) == 4 and len(corpus) == 10
    by_id = {d.id: d for d in corpus}
    kinds = set()
    for query_id, query in queries.items():
        (doc_id,) = qrels[query_id]
        assert query not in by_id[doc_id].full_text  # neither stage can find it by copying the query
        kinds.add("title" if query.startswith("Title") else "sentence")
    assert kinds == {"title", "sentence"}
    untouched = [d for d in corpus if d.id not in {next(iter(j)) for j in qrels.values()}]
    assert all(d == documents[int(d.id[1:])] for d in untouched)


def test_layer_plan() -> None:
    assert layer_plan(6, None) == [2, 4, 6]
    assert layer_plan(12, None) == [4, 8, 12]
    assert layer_plan(2, None) == [1, 2]
    assert layer_plan(6, (6, 2, 2)) == [2, 6]
    with pytest.raises(ValueError, match=r"outside 1\.\.6"):
        layer_plan(6, (0, 7))


def _cross_encoder(folder: Path):  # type: ignore[no-untyped-def]
    from sentence_transformers.cross_encoder import CrossEncoder

    return CrossEncoder(str(folder), num_labels=1, max_length=32)


def test_the_loss_reads_only_the_listed_layers(tiny_cross_encoder_dir: Path) -> None:
    model = _cross_encoder(tiny_cross_encoder_dir)
    loss = LayerwiseRankingLoss(model, [1], num_negatives=1)
    loss(BATCH, torch.zeros(4)).backward()
    encoder = transformer_of(model).bert.encoder.layer
    first = [p.grad for p in encoder[0].parameters()]
    second = [p.grad for p in encoder[1].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in first)
    assert all(g is None or g.abs().sum() == 0 for g in second)  # layer 2 plays no part in a layer-1 score


def test_a_step_lowers_the_loss_at_each_layer_and_the_cut_model_scores_as_training_did(
    tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = _cross_encoder(tiny_cross_encoder_dir)
    loss = LayerwiseRankingLoss(model, [1, 2], num_negatives=1)
    transformer_of(model).eval()  # no dropout: the step's effect is the only change
    before = loss.layer_losses(BATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        loss(BATCH, torch.zeros(4)).backward()
        optimizer.step()
    after = loss.layer_losses(BATCH)
    assert all(a < b - 1e-3 for a, b in zip(after, before, strict=True)), (before, after)

    # The training-time layer-1 score is what a model cut to its first layer (the export's cut) returns.
    trained = tmp_path / "trained"
    model.save_pretrained(str(trained))
    cut = truncate_layers(trained, tmp_path / "cut", 1)
    documents = {f"d{i}": Document(id=f"d{i}", text=t) for i, t in enumerate(BATCH[1] + BATCH[2])}
    rankings = {"q": [(d, 0.0) for d in documents]}
    layers = score_layers(model, rankings, documents, {"q": BATCH[0][0]}, [1, 2], batch_size=3)
    cut_scores = score_layers(_cross_encoder(cut), rankings, documents, {"q": BATCH[0][0]}, [1], 8)
    full = score_layers(_cross_encoder(trained), rankings, documents, {"q": BATCH[0][0]}, [2], 8)
    assert cut_scores[1]["q"] == pytest.approx(layers[1]["q"], abs=1e-5)
    assert full[2]["q"] == pytest.approx(layers[2]["q"], abs=1e-5)
    plain = _cross_encoder(cut).predict(
        [(BATCH[0][0], documents[d].full_text) for d in documents], activation_fn=torch.nn.Identity()
    )
    assert [float(v) for v in plain] == pytest.approx([layers[1]["q"][d] for d in documents], abs=1e-5)
    assert layers[1]["q"] != pytest.approx(layers[2]["q"], abs=1e-3)  # the layers do score differently
