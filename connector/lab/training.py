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

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.factory import search_options
from hybrid_rerank.connector.lab.evaluation import evaluate_run, hybrid_rankings, prepare_benchmark
from hybrid_rerank.connector.lab.training_data import (
    Example,
    TrainingConfig,
    build_examples,
    pseudo_queries,
    split_dev,
    tune_interpolation,
)
from hybrid_rerank.connector.lab.tuning import rerank_rankings
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.factory import make_scorer
from hybrid_rerank.workers.runtime.models import RERANK_METADATA
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
    prepared = prepare_benchmark(
        settings, folder, config.split, backend=backend, embedder=embedder, progress=progress
    )
    benchmark, backend, embedder = prepared.benchmark, prepared.backend, prepared.embedder
    documents = {d.id: d for d in benchmark.documents}
    train_ids, dev_ids = split_dev(list(benchmark.queries), config.dev_queries, config.seed)
    train_ids = train_ids[: config.max_train_queries] if config.max_train_queries else train_ids
    log(
        f"{benchmark.name} {config.split}: {len(train_ids)} training queries, {len(dev_ids)} held out for dev"
    )

    pseudo = pseudo_queries(benchmark.documents, config, rng)
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
    model, history, train_seconds = _fit(config, examples, dev_first, documents, benchmark, output, log)
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
        "history": history,
    }
    write_metadata(output, weight, config.max_length, report)
    (output / "README.md").write_text(model_card(report, folder), encoding="utf-8")
    return report


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


def _fit(
    config: TrainingConfig,
    examples: Sequence[Example],
    dev_first: Mapping[str, Sequence[tuple[str, float]]],
    documents: Mapping[str, Document],
    benchmark: Any,
    output: Path,
    log: Callable[[str], None],
) -> tuple[Any, list[dict[str, float]], float]:
    """The sentence-transformers training API: CrossEncoderTrainer, a listwise loss, a dev evaluator."""
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
    columns: dict[str, list[str]] = {
        "query": [e.query for e in examples],
        "positive": [e.positive for e in examples],
    }
    for i in range(len(examples[0].negatives) if examples else 0):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in examples]
    dataset = Dataset.from_dict(columns)
    evaluator = DevEvaluator(dev_first, documents, benchmark.queries, benchmark.qrels, config.batch_size * 4)
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

    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives),
        evaluator=evaluator,
        callbacks=[Log()],
    )
    log(
        f"training {base.name} on {len(examples)} examples: {config.epochs} epoch(s), "
        f"batch {config.batch_size}, "
        f"lr {config.learning_rate}, max_length {config.max_length}, bf16 {use_bf16}"
    )
    started = time.perf_counter()
    trainer.train()
    return model, history, time.perf_counter() - started


_SHOWN = {"loss", "eval_dev_ndcg@10", "eval_dev_first_ndcg@10", "eval_dev_score_std", "epoch"}


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
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.primary_metric = "dev_ndcg@10"
        self.greater_is_better = True
        self.first, self.documents, self.queries, self.batch_size = first, documents, queries, batch_size
        self.qrels = {q: qrels[q] for q in first}

    def __call__(
        self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        was_training = model.training
        scores = score_rankings(model, self.first, self.documents, self.queries, self.batch_size)
        model.train(was_training)
        run = {q: sorted(s, key=lambda d: -s[d]) for q, s in scores.items()}
        values = np.array([v for s in scores.values() for v in s.values()])
        first_run = {q: [d for d, _ in r] for q, r in self.first.items()}
        return {
            "dev_ndcg@10": evaluate_run(run, self.qrels)["ndcg@10"],
            "dev_first_ndcg@10": evaluate_run(first_run, self.qrels)["ndcg@10"],
            "dev_score_std": float(values.std()),
        }


def write_metadata(folder: Path, weight: float, max_length: int, report: Mapping[str, Any]) -> None:
    metadata = {
        "interpolation_weight": weight,
        "trained_max_length": max_length,
        "fusion": report.get("fusion"),
        "dev": report.get("dev"),
    }
    (folder / RERANK_METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")


def model_card(report: Mapping[str, Any], folder: Path) -> str:
    config = report["config"]
    dev = report["dev"]
    lines = [
        "# Cross-encoder reranker trained by `hybrid-rerank train-reranker`",
        "",
        f"- **Base model:** {report['base_model']}",
        f"- **Data:** `{folder.name}` qrels split `{report['split']}` "
        f"({report['train_queries']} queries for training, {report['dev_queries']} held out as dev), "
        f"hard negatives from hybrid ({report['fusion']}) recall top {config['mine_depth']}, "
        f"pseudo-queries from the corpus: {report['examples']}",
        "- **Loss:** listwise softmax (MultipleNegativesRankingLoss), "
        f"1 positive + {config['negatives']} hard negatives + "
        f"{config['in_batch_negatives']} in-batch negative(s)",
        f"- **Settings:** {config['epochs']} epoch(s), batch {config['batch_size']}, "
        f"lr {config['learning_rate']}, "
        f"warmup {config['warmup_ratio']}, max_length {config['max_length']}, seed {config['seed']}",
        f"- **Training time:** {report['train_seconds']:.0f} s ({report['total_seconds']:.0f} s with mining)",
        f"- **Dev nDCG@10** (reranking the hybrid top {config['mine_depth']}): first stage "
        f"{dev['first_stage_ndcg@10']:.4f}, rerank only {dev['rerank_ndcg@10']:.4f}, "
        f"interpolated with the first stage at rerank weight {report['interpolation_weight']} "
        f"{dev['interpolated_ndcg@10']:.4f}",
        f"- **Dev score spread:** mean {dev['score_mean']:.3f}, std {dev['score_std']:.3f}",
        "",
        "The interpolation weight is stored in `hybrid_rerank.json`; the pipeline mixes the per-query",
        "z-scores of the rerank score and of the fused first-stage score with it (`RERANK_INTERPOLATION`",
        "overrides it).",
        "",
        "## Licence of the training data",
        "",
        "If trained on SciFact: SciFact is released under CC BY-NC 2.0 (non-commercial). A model fine-tuned",
        "on it is derived from that data, so commercial use needs your own legal review; the conservative",
        "reading is: evaluation, research and demos only. Production users should set `RERANK_MODEL` to a",
        "reranker whose licence fits (for example BAAI/bge-reranker-v2-m3, Apache-2.0).",
        "",
    ]
    return "\n".join(lines)
