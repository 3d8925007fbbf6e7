"""`hybrid-rerank train-reranker`: domain-adaptive fine-tuning of a cross-encoder on a BEIR folder.

Positives come from a training split's qrels and hard negatives from our own hybrid recall, so the model
learns to separate exactly the candidates it will be shown. SciFact's 919 training positives are only 565
cited abstracts, so a model can learn *which documents were cited* instead of relevance. Two things counter
that document prior: every example also gets a negative that is another training query's positive (the same
pool), and pseudo-queries made from the corpus itself (a title for its abstract, a sentence for the rest of
its document) make every abstract a positive somewhere. The loss is listwise (softmax over one positive and
its negatives, sentence-transformers' MultipleNegativesRankingLoss), which cannot collapse to a constant
score the way binary cross-entropy on a 10:1 imbalance did.

A dev split of the *training* queries is held out: it is scored during training (nDCG@10 of reranking the
hybrid top-N, and the spread of the scores) and it tunes the interpolation weight between the rerank score
and the first-stage score, written into the model folder so that a weak reranker never makes results worse
than hybrid.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.factory import search_options
from hybrid_rerank.connector.lab.evaluation import evaluate_run, hybrid_rankings, prepare_benchmark
from hybrid_rerank.connector.lab.layerwise import (
    LayerwiseRankingLoss,
    LayerwiseUnsupportedError,
    classification_head,
    layer_count,
    transformer_of,
)
from hybrid_rerank.connector.lab.training_card import model_card, write_metadata
from hybrid_rerank.connector.lab.training_data import (
    Example,
    TrainingConfig,
    build_examples,
    layer_plan,
    pseudo_queries,
    relevant_documents,
    split_dev,
    split_dev_by_documents,
    tune_interpolation,
)
from hybrid_rerank.connector.lab.training_dev import DevEvaluator, tune_layers
from hybrid_rerank.connector.lab.training_unlabeled import prepare_unlabeled
from hybrid_rerank.connector.lab.tuning import rerank_rankings
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.factory import make_scorer
from hybrid_rerank.workers.runtime.runners import bf16_available

Progress = Callable[[str, int, int], None]


def train_reranker(
    settings: Settings,
    folder: Path,
    output: Path,
    config: TrainingConfig,
    *,
    backend: Backend | None = None,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Mine, train, score the dev split, tune the interpolation weight and write the model folder + card."""
    started = time.perf_counter()
    rng = random.Random(config.seed)
    if config.unlabeled:
        prepared = prepare_unlabeled(
            settings, folder, config, rng, backend=backend, embedder=embedder, progress=progress
        )
        train_ids: list[str] = []
        dev_ids = sorted(prepared.benchmark.queries)
    else:
        prepared = prepare_benchmark(
            settings, folder, config.split, backend=backend, embedder=embedder, progress=progress
        )
        qrels = prepared.benchmark.qrels
        if config.dev_split == "documents":
            train_ids, dev_ids = split_dev_by_documents(qrels, config.dev_queries, config.seed)
        else:
            train_ids, dev_ids = split_dev(list(qrels), config.dev_queries, config.seed)
    benchmark, backend, embedder = prepared.benchmark, prepared.backend, prepared.embedder
    documents = {d.id: d for d in benchmark.documents}
    train_ids = train_ids[: config.max_train_queries] if config.max_train_queries else train_ids
    log(
        f"{benchmark.name} {'unlabeled' if config.unlabeled else config.split}: {len(train_ids)} training "
        f"queries, {len(dev_ids)} held out for dev ({'documents' if config.unlabeled else config.dev_split})"
    )

    # No training pseudo-query may come from a document a dev query cites (the split stays disjoint).
    dev_documents = relevant_documents(benchmark.qrels, dev_ids)
    pseudo = [row for row in pseudo_queries(benchmark.documents, config, rng) if row[2] not in dev_documents]
    real_ids = [*train_ids, *dev_ids]
    texts = [benchmark.queries[q] for q in real_ids] + [row[1] for row in pseudo]
    query_vectors = embedder.embed_texts(  # queries: with the model's query prompt, as search embeds them
        [embedder.query_prompt + text for text in texts],
        (lambda d, t: progress("embedding queries", d, t)) if progress else None,
    )
    rankings: list[list[tuple[str, float]]] = []
    for start in range(0, len(texts), 200):
        end = min(start + 200, len(texts))
        rankings += hybrid_rankings(
            backend, search_options(settings), texts[start:end], query_vectors[start:end], config.mine_depth
        )
        if progress:
            progress("mining hybrid recall", end, len(texts))
    by_query = dict(zip(real_ids, rankings[: len(real_ids)], strict=True))
    pseudo_ranked = [[d for d, _ in r] for r in rankings[len(real_ids) :]]

    train_qrels = {q: benchmark.qrels[q] for q in train_ids}
    examples = build_examples(
        config,
        documents,
        benchmark.queries,
        train_qrels,
        {q: [d for d, _ in by_query[q]] for q in train_ids},
        pseudo,
        pseudo_ranked,
        rng,
    )
    rng.shuffle(examples)
    kinds = {k: sum(1 for e in examples if e.kind == k) for k in ("qrels", "title", "sentence")}
    log(f"{len(examples)} training examples ({kinds}), 1 positive + {config.negatives} hard negatives each")

    dev_first = {q: by_query[q] for q in dev_ids}
    model, layers, history, train_seconds = _fit(
        config, examples, dev_first, documents, benchmark, output, log
    )
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output))

    # The weight is tuned on the scores the pipeline will compute: the saved folder through the reranking
    # core, at the configured max_length and passages.
    scorer = make_scorer(settings.model_copy(update={"rerank_model": str(output)}))
    assert scorer is not None
    scorer.backend = "torch-bf16" if bf16_available() else "torch"
    dev_rerank = rerank_rankings(scorer, dev_first, documents, benchmark.queries, progress)
    weight, curve = tune_interpolation(dev_rerank, dev_first, benchmark.qrels)
    dev_qrels = {q: benchmark.qrels[q] for q in dev_ids}
    first_ndcg = evaluate_run({q: [d for d, _ in r] for q, r in dev_first.items()}, dev_qrels)["ndcg@10"]
    log(
        f"dev nDCG@10: first stage {first_ndcg:.4f}, rerank only {curve[1.0]:.4f}, "
        f"interpolated (rerank weight {weight}) {curve[weight]:.4f}"
    )
    scores = np.array([s for per_query in dev_rerank.values() for s in per_query.values()])
    report: dict[str, Any] = {
        "base_model": config.base_model,
        "dataset": str(folder),
        "split": config.split,
        "train_queries": len(train_ids),
        "dev_queries": len(dev_ids),
        "examples": kinds,
        "config": asdict(config),
        "fusion": settings.fusion,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "dev": {
            "first_stage_ndcg@10": first_ndcg,
            "rerank_ndcg@10": curve[1.0],
            "interpolated_ndcg@10": curve[weight],
            "interpolation_curve": {str(k): v for k, v in curve.items()},
            "score_mean": float(scores.mean()),
            "score_std": float(scores.std()),
        },
        "interpolation_weight": weight,
        "dev_split": {
            "kind": "documents" if config.unlabeled else config.dev_split,
            "seed": config.seed,
            "query_ids": [] if config.unlabeled else dev_ids,
        },
        "history": history,
    }
    if layers:
        report["layerwise"] = tune_layers(
            model, layers, dev_first, documents, benchmark, config.batch_size * 4
        )
        log(f"layerwise dev: {report['layerwise']}")
    write_metadata(output, weight, config.max_length, report)
    (output / "README.md").write_text(model_card(report, folder), encoding="utf-8")
    return report


def _fit(
    config: TrainingConfig,
    examples: Sequence[Example],
    dev_first: Mapping[str, Sequence[tuple[str, float]]],
    documents: Mapping[str, Document],
    benchmark: Any,
    output: Path,
    log: Callable[[str], None],
) -> tuple[Any, list[int], list[dict[str, float]], float]:
    """The sentence-transformers training API: CrossEncoderTrainer, a listwise loss (averaged over the
    layerwise layers, if any), a dev evaluator. Returns (model, layers, history, seconds)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from hybrid_rerank.workers.runtime.models import quiet_transformers, resolve_model

    quiet_transformers()
    torch.manual_seed(config.seed)
    base = resolve_model(config.base_model)
    model = CrossEncoder(base.location, num_labels=1, max_length=config.max_length)
    layers = _layers(transformer_of(model), config.layerwise, log)
    columns: dict[str, list[str]] = {
        "query": [e.query for e in examples],
        "positive": [e.positive for e in examples],
    }
    for i in range(len(examples[0].negatives) if examples else 0):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in examples]
    dataset = Dataset.from_dict(columns)
    evaluator = DevEvaluator(
        dev_first, documents, benchmark.queries, benchmark.qrels, config.batch_size * 4, layers
    )
    use_bf16 = bf16_available() if config.bf16 is None else config.bf16
    args = CrossEncoderTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps (Transformers 5)
        bf16=use_bf16,
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        logging_steps=max(config.eval_steps // 4, 1),
        # Keep the checkpoint with the best dev nDCG (held-out training queries, never test).
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_dev_ndcg@10",
        report_to="none",
        seed=config.seed,
        dataloader_drop_last=True,
        disable_tqdm=True,
    )
    history: list[dict[str, float]] = []

    class Log(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any
        ) -> None:
            if logs:
                entry = {"step": float(state.global_step), **{k: float(v) for k, v in logs.items()}}
                history.append(entry)
                shown = {k: round(v, 4) for k, v in entry.items() if k in _SHOWN}
                log(f"step {state.global_step}/{state.max_steps}: {shown}")

    class Budget(TrainerCallback):
        """On a shared machine: stop before the next step would overrun the time budget, scoring dev and
        saving first, so the best evaluated checkpoint is still the one kept."""

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            elapsed = time.perf_counter() - started
            budget = (config.time_budget_minutes or 0.0) * 60.0
            if state.global_step < state.max_steps and elapsed * (1 + 1 / state.global_step) > budget:
                control.should_training_stop = control.should_evaluate = control.should_save = True
                history.append({"step": float(state.global_step), "stopped_by_time_budget": 1.0})
                log(f"time budget reached after step {state.global_step}/{state.max_steps} ({elapsed:.0f} s)")

    loss = (
        LayerwiseRankingLoss(model, layers, config.in_batch_negatives)
        if layers
        else MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives)
    )
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        callbacks=[Log(), Budget()] if config.time_budget_minutes else [Log()],
    )
    log(
        f"training {base.name} on {len(examples)} examples: {config.epochs} epoch(s), "
        f"batch {config.batch_size}, "
        f"lr {config.learning_rate}, max_length {config.max_length}, bf16 {use_bf16}, "
        f"layerwise {layers or 'off'}"
    )
    started = time.perf_counter()
    trainer.train()
    return model, layers, history, time.perf_counter() - started


def _layers(transformer: Any, requested: tuple[int, ...] | None, log: Callable[[str], None]) -> list[int]:
    """The layers the loss reads; [] for the plain (last-layer) loss."""
    if requested == ():
        return []
    try:
        classification_head(transformer)
    except LayerwiseUnsupportedError as error:
        if requested is not None:
            raise
        log(f"layerwise objective off: {error}")
        return []
    return layer_plan(layer_count(transformer), requested)


_SHOWN = {"loss", "eval_dev_ndcg@10", "eval_dev_first_ndcg@10", "eval_dev_score_std", "epoch"}
_SHOWN |= {f"eval_dev_layer{k}_ndcg@10" for k in range(1, 49)}
