"""train-reranker: the data it builds (pure), the interpolation tuning, and a tiny real training run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.fusion import interpolate
from hybrid_rerank.connector.lab.training import train_reranker
from hybrid_rerank.connector.lab.training_data import (
    TrainingConfig,
    build_examples,
    pick_sentence,
    pseudo_queries,
    sample_negatives,
    split_dev,
    tune_interpolation,
)
from hybrid_rerank.connector.lab.tuning import retune_interpolation
from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import CrossEncoderScorer

DEMO = Path(__file__).resolve().parents[2] / "connector" / "lab" / "demo_data"


def test_dev_split_is_seeded_and_disjoint() -> None:
    ids = [f"q{i}" for i in range(50)]
    train, dev = split_dev(ids, 10, seed=1)
    assert len(dev) == 10 and len(train) == 40 and not set(train) & set(dev)
    assert split_dev(ids, 10, seed=1) == (train, dev)
    assert split_dev(ids, 10, seed=2)[1] != dev
    assert len(split_dev(ids[:6], 10, seed=1)[1]) == 3  # never more than half


def test_a_sentence_query_leaves_the_rest_of_its_document() -> None:
    text = (
        "Vitamin D is made in the skin. Low levels of vitamin D were linked to more hip fractures in older "
        "women. The effect held after adjusting for age and weight. Results were published in 2010."
    )
    sentence, rest = pick_sentence(text, random.Random(0))
    assert sentence and sentence in text and sentence not in rest
    assert len(rest) < len(text)
    assert pick_sentence("Too short. Two.", random.Random(0)) == ("", "Too short. Two.")


def test_negatives_exclude_positives_and_take_one_from_the_cited_pool() -> None:
    rng = random.Random(3)
    ranked = ["p1", "a", "b", "c", "cited", "d"]
    chosen = sample_negatives(ranked, {"p1"}, 3, rng, pool=["cited", "p1"])
    assert len(chosen) == 3 and "p1" not in chosen and "cited" in chosen
    assert len(set(chosen)) == 3
    assert sample_negatives(["p1"], {"p1"}, 3, rng) == []


def doc(doc_id: str, title: str, text: str) -> Document:
    return Document(id=doc_id, title=title, text=text)


def test_examples_have_equal_width_and_title_queries_never_show_the_title() -> None:
    docs = {
        d.id: d
        for d in [
            doc("d1", "Moon phases explained", "The moon reflects sunlight. Its phases follow its orbit."),
            doc("d2", "Steak resting", "Resting meat keeps juices. Cut after five minutes."),
            doc("d3", "Blood pressure drugs", "Beta blockers lower pressure. Side effects vary."),
            doc("d4", "Sleep and diet", "Late meals disturb sleep. Fibre helps."),
        ]
    }
    config = TrainingConfig(negatives=2, real_repeats=1, sentence_queries=0)
    rng = random.Random(0)
    pseudo = pseudo_queries(list(docs.values()), config, rng)
    assert {row[0] for row in pseudo} == {"title"} and len(pseudo) == 4
    examples = build_examples(
        config,
        docs,
        {"q1": "why moon phases"},
        {"q1": {"d1": 1}},
        {"q1": ["d1", "d2", "d3", "d4"]},
        pseudo,
        [[d for d in docs if d != row[2]] for row in pseudo],
        rng,
    )
    assert {len(e.negatives) for e in examples} == {2}
    real = [e for e in examples if e.kind == "qrels"]
    assert len(real) == 1 and real[0].positive == docs["d1"].full_text
    assert docs["d1"].full_text not in real[0].negatives
    for example in (e for e in examples if e.kind == "title"):
        assert example.query not in example.positive
        assert all(not n.startswith(tuple(d.title for d in docs.values())) for n in example.negatives)


def test_interpolation_mixes_z_scores_and_checks_the_weight() -> None:
    rerank = {"a": 3.0, "b": 1.0, "c": 2.0}
    first = {"a": 0.0, "b": 10.0, "c": 5.0}
    assert interpolate(rerank, first, 1.0) == pytest.approx({"a": 1.2247, "b": -1.2247, "c": 0.0}, abs=1e-4)
    assert interpolate(rerank, first, 0.0) == pytest.approx({"a": -1.2247, "b": 1.2247, "c": 0.0}, abs=1e-4)
    assert interpolate(rerank, first, 0.5) == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.0}, abs=1e-9)
    with pytest.raises(ValueError):
        interpolate(rerank, first, 1.5)


def test_tuning_picks_the_first_stage_when_the_reranker_is_wrong_and_it_when_it_is_right() -> None:
    first = {"q1": [("rel", 3.0), ("x", 2.0), ("y", 1.0)], "q2": [("x", 3.0), ("rel", 2.0), ("y", 1.0)]}
    qrels = {"q1": {"rel": 1}, "q2": {"rel": 1}}
    wrong = {q: {"rel": 0.0, "x": 1.0, "y": 2.0} for q in first}
    right = {q: {"rel": 5.0, "x": 1.0, "y": 0.0} for q in first}
    assert tune_interpolation(wrong, first, qrels)[0] == 0.0
    weight, curve = tune_interpolation(right, first, qrels)
    assert curve[weight] == pytest.approx(1.0) and curve[0.0] < 1.0 and weight > 0.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the module's training runs: the demo corpus is embedded once."""
    return tmp_path_factory.mktemp("training-data")


def test_a_tiny_training_run_writes_a_model_that_loads(
    tmp_path: Path, tiny_cross_encoder_dir: Path, embedder: Embedder, data_dir: Path
) -> None:
    settings = load_settings(data_dir=data_dir, rerank_max_length=64, rerank_depth=10, recall_depth=20)
    config = TrainingConfig(
        base_model=str(tiny_cross_encoder_dir),
        split="test",  # the demo corpus has one split; this is a plumbing test, not an evaluation
        dev_queries=6,
        max_train_queries=10,
        title_queries=12,
        sentence_queries=6,
        negatives=2,
        mine_depth=10,
        batch_size=4,
        max_length=64,
        eval_steps=5,
        bf16=False,
    )
    out = tmp_path / "model"
    report = train_reranker(settings, DEMO, out, config, embedder=embedder, log=lambda _: None)
    assert report["examples"]["qrels"] > 0 and report["examples"]["title"] > 0
    assert any("eval_dev_ndcg@10" in entry for entry in report["history"])  # the dev split was scored
    metadata = json.loads((out / "hybrid_rerank.json").read_text(encoding="utf-8"))
    assert 0.0 <= metadata["interpolation_weight"] <= 1.0
    # layerwise by default (auto: every third of the tiny model's 2 layers), scored per layer on dev
    assert any("eval_dev_layer1_ndcg@10" in entry for entry in report["history"])
    layerwise = metadata["layerwise"]
    assert layerwise["layers"] == [1, 2]
    assert set(layerwise["dev_ndcg@10"]) == set(layerwise["interpolation_weights"]) == {"1", "2"}
    assert all(0.0 <= w <= 1.0 for w in layerwise["interpolation_weights"].values())
    assert metadata["dev_split"]["kind"] == "documents" and len(metadata["dev_split"]["query_ids"]) > 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Base model" in card and "CC BY-NC" in card
    scored = CrossEncoderScorer(str(out), max_length=64).score("moon", [Candidate("a", "the moon")])
    assert len(scored) == 1

    retuned = retune_interpolation(
        settings.model_copy(update={"rerank_max_length": 32}),
        DEMO,
        out,
        split="test",
        dev_queries=6,
        depth=10,
    )
    metadata = json.loads((out / "hybrid_rerank.json").read_text(encoding="utf-8"))
    assert metadata["interpolation_weight"] == retuned["interpolation_weight"]
    assert metadata["tuned_with"]["max_length"] == 32 and metadata["trained_max_length"] == 64


def test_unlabeled_adaptation_needs_only_the_corpus(
    tmp_path: Path, tiny_cross_encoder_dir: Path, embedder: Embedder, data_dir: Path
) -> None:
    corpus_only = tmp_path / "corpus"
    corpus_only.mkdir()
    (corpus_only / "corpus.jsonl").write_bytes((DEMO / "corpus.jsonl").read_bytes())  # no queries, no qrels
    settings = load_settings(data_dir=data_dir, rerank_max_length=64, rerank_depth=10, recall_depth=20)
    config = TrainingConfig(
        base_model=str(tiny_cross_encoder_dir),
        unlabeled=True,
        dev_queries=8,
        title_queries=16,
        sentence_queries=8,
        negatives=2,
        mine_depth=10,
        batch_size=4,
        max_length=64,
        eval_steps=3,
        bf16=False,
        layerwise=(),
        time_budget_minutes=1e-9,  # stops after the first step, scoring dev before it does
    )
    out = tmp_path / "adapted"
    report = train_reranker(settings, corpus_only, out, config, embedder=embedder, log=lambda _: None)
    assert report["examples"]["qrels"] == 0 and report["examples"]["title"] > 0
    assert report["train_queries"] == 0 and report["dev_queries"] == 8
    assert [e["step"] for e in report["history"] if "stopped_by_time_budget" in e] == [1.0]
    assert [e["step"] for e in report["history"] if "eval_dev_ndcg@10" in e] == [1.0]
    assert 0.0 < report["dev"]["first_stage_ndcg@10"] < 1.0  # dev documents lost their query text
    metadata = json.loads((out / "hybrid_rerank.json").read_text(encoding="utf-8"))
    assert "layerwise" not in metadata and metadata["dev_split"]["kind"] == "documents"
    # training started from an existing cross-encoder folder (--base): the tiny one's head was kept
    assert report["base_model"] == str(tiny_cross_encoder_dir)
    scored = CrossEncoderScorer(str(out), max_length=64).score("moon", [Candidate("a", "moon")])
    assert len(scored) == 1
