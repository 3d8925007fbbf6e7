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
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from connector.backends.base import Backend
from connector.documents import Document
from connector.embedder import Embedder
from connector.evaluation import evaluate_run, hybrid_rankings, prepare_benchmark
from connector.fusion import interpolate
from connector.models import RERANK_METADATA
from connector.settings import Settings
from workers.reranking import Candidate, CrossEncoderScorer

Progress = Callable[[str, int, int], None]
INTERPOLATION_GRID = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))


@dataclass(frozen=True)
class TrainingConfig:
    base_model: str = "all-MiniLM-L6-v2"
    split: str = "train"
    dev_queries: int = 100  # training queries held out for the dev score and the interpolation weight
    max_train_queries: int | None = None  # a slice of the training queries (smoke runs, tests)
    mine_depth: int = 30  # hard negatives come from the hybrid top-N
    negatives: int = 4  # hard negatives per example
    title_queries: int = -1  # pseudo-queries: title -> its abstract (-1: every titled document)
    sentence_queries: int = 2000  # pseudo-queries: a sentence -> the rest of its document
    real_repeats: int = 2  # each real (query, positive) pair appears this many times per epoch
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    max_length: int = 128
    in_batch_negatives: int = 1
    bf16: bool | None = None  # None: on where the CPU or GPU has it
    eval_steps: int = 200
    seed: int = 13
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Example:
    query: str
    positive: str
    negatives: tuple[str, ...]
    kind: str  # "qrels", "title" or "sentence"


def split_dev(query_ids: Sequence[str], dev_size: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, dev): a seeded shuffle, so the same command holds out the same queries."""
    ids = sorted(query_ids)
    random.Random(seed).shuffle(ids)
    dev_size = min(max(dev_size, 0), len(ids) // 2)
    return sorted(ids[dev_size:]), sorted(ids[:dev_size])


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def pick_sentence(text: str, rng: random.Random, min_words: int = 8, max_words: int = 40) -> tuple[str, str]:
    """(a sentence of `text`, the text without it), or ("", text) when no sentence has a usable length."""
    sentences = _SENTENCE.split(text.strip())
    usable = [i for i, s in enumerate(sentences) if min_words <= len(s.split()) <= max_words]
    if len(sentences) < 3 or not usable:
        return "", text
    chosen = rng.choice(usable)
    rest = " ".join(s for i, s in enumerate(sentences) if i != chosen)
    return sentences[chosen], rest


def sample_negatives(
    ranked: Sequence[str], exclude: set[str], count: int, rng: random.Random, pool: Sequence[str] = ()
) -> list[str]:
    """`count` ids from the recall list minus `exclude`, plus one from `pool` (other queries' positives)
    when given: the negative that says "being cited is not being relevant"."""
    candidates = [doc_id for doc_id in ranked if doc_id not in exclude]
    chosen = rng.sample(candidates, min(count, len(candidates)))
    if pool:
        in_recall = [d for d in candidates if d in set(pool) and d not in chosen]
        others = in_recall or [d for d in pool if d not in exclude and d not in chosen]
        if others:
            chosen = [*chosen[: max(count - 1, 0)], rng.choice(others)]
    return chosen


def build_examples(
    config: TrainingConfig,
    documents: Mapping[str, Document],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, Sequence[str]],
    pseudo: Sequence[tuple[str, str, str, str]],
    pseudo_rankings: Sequence[Sequence[str]],
    rng: random.Random,
) -> list[Example]:
    """Training tuples. `pseudo` rows are (kind, query, source doc id, positive text); their negatives are
    read the same way as the positive (abstract only for a title query), so form gives nothing away."""
    cited = sorted({d for judged in qrels.values() for d, grade in judged.items() if grade > 0})
    examples: list[Example] = []
    for query_id in sorted(qrels):
        positives = {d for d, grade in qrels[query_id].items() if grade > 0}
        for doc_id in sorted(positives):
            for _ in range(config.real_repeats):
                negative_ids = sample_negatives(rankings[query_id], positives, config.negatives, rng, cited)
                if negative_ids:
                    examples.append(
                        Example(
                            queries[query_id],
                            documents[doc_id].full_text,
                            tuple(documents[n].full_text for n in negative_ids),
                            "qrels",
                        )
                    )
    for (kind, query, source_id, positive), ranked in zip(pseudo, pseudo_rankings, strict=True):
        negative_ids = sample_negatives(ranked, {source_id}, config.negatives, rng)
        if not negative_ids:
            continue
        if kind == "title":
            negatives = tuple(documents[n].text for n in negative_ids)
        else:
            negatives = tuple(documents[n].full_text for n in negative_ids)
        examples.append(Example(query, positive, negatives, kind))
    # Every example must have the same number of negatives for the loss's columns.
    width = max((len(e.negatives) for e in examples), default=0)
    return [e for e in examples if len(e.negatives) == width]


def pseudo_queries(
    documents: Sequence[Document], config: TrainingConfig, rng: random.Random
) -> list[tuple[str, str, str, str]]:
    """(kind, query, source doc id, positive text) made from the corpus itself."""
    rows: list[tuple[str, str, str, str]] = []
    titled = [d for d in documents if d.title.strip() and d.text.strip()]
    if config.title_queries != 0:
        chosen = (
            titled if config.title_queries < 0 else rng.sample(titled, min(config.title_queries, len(titled)))
        )
        rows.extend(("title", d.title.strip(), d.id, d.text) for d in chosen)
    if config.sentence_queries > 0:
        order = list(documents)
        rng.shuffle(order)
        for doc in order:
            sentence, rest = pick_sentence(doc.text, rng)
            if sentence:
                positive = f"{doc.title}\n{rest}" if doc.title else rest
                rows.append(("sentence", sentence, doc.id, positive))
            if sum(1 for r in rows if r[0] == "sentence") >= config.sentence_queries:
                break
    return rows


def tune_interpolation(
    rerank: Mapping[str, Mapping[str, float]],
    first: Mapping[str, Sequence[tuple[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
) -> tuple[float, dict[float, float]]:
    """The rerank weight in [0, 1] with the best smoothed dev nDCG@10 (ties go to less rerank), and the whole
    curve."""
    curve: dict[float, float] = {}
    for weight in INTERPOLATION_GRID:
        run: dict[str, list[str]] = {}
        for query_id, ranked in first.items():
            mixed = interpolate(rerank[query_id], dict(ranked), weight)
            head = sorted(mixed, key=lambda d: -mixed[d])
            run[query_id] = head + [d for d, _ in ranked if d not in mixed]
        curve[weight] = evaluate_run(run, {q: qrels[q] for q in first})["ndcg@10"]
    # Pick on the curve averaged with its neighbours: a lone spike between two dips is dev noise, a plateau
    # is not, and its middle keeps working when the test queries differ a little.
    weights = list(curve)
    smoothed = {
        w: float(np.mean([curve[v] for v in weights[max(i - 1, 0) : i + 2]])) for i, w in enumerate(weights)
    }
    best = max(weights, key=lambda w: (round(smoothed[w], 6), -w))
    return best, curve


def bf16_available() -> bool:
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    query_vectors = embedder.embed_texts(
        texts, (lambda d, t: progress("embedding queries", d, t)) if progress else None
    )
    rankings: list[list[tuple[str, float]]] = []
    for start in range(0, len(texts), 200):
        end = min(start + 200, len(texts))
        rankings += hybrid_rankings(
            backend, settings, texts[start:end], query_vectors[start:end], config.mine_depth
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
    scorer = CrossEncoderScorer.from_settings(settings.model_copy(update={"rerank_model": str(output)}))
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

    from connector.embedder import quiet_transformers
    from connector.models import resolve_model

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
) -> dict[str, Any]:
    """Tune the rerank weight again on the same held-out dev queries, for the current settings (another
    max_length, passages or backend), and rewrite the model folder's hybrid_rerank.json."""
    from connector.models import read_rerank_metadata

    prepared = prepare_benchmark(settings, folder, split, progress=progress)
    benchmark = prepared.benchmark
    train_ids, dev_ids = split_dev(list(benchmark.queries), dev_queries, seed)
    # Dev queries whose relevant documents no training query cites: the harder, more honest subset (SciFact
    # has claim pairs citing the same abstract, so a random dev query often has a twin in training).
    seen = {d for q in train_ids for d, grade in benchmark.qrels[q].items() if grade > 0}
    unseen = [q for q in dev_ids if not {d for d, g in benchmark.qrels[q].items() if g > 0} & seen]
    texts = [benchmark.queries[q] for q in dev_ids]
    rankings = hybrid_rankings(prepared.backend, settings, texts, prepared.embedder.embed_texts(texts), depth)
    dev_first = dict(zip(dev_ids, rankings, strict=True))
    scorer = CrossEncoderScorer.from_settings(settings.model_copy(update={"rerank_model": str(model_dir)}))
    assert scorer is not None
    documents = {d.id: d for d in benchmark.documents}
    dev_rerank = rerank_rankings(scorer, dev_first, documents, benchmark.queries, progress)
    weight, curve = tune_interpolation(dev_rerank, dev_first, benchmark.qrels)
    _, unseen_curve = tune_interpolation(
        {q: dev_rerank[q] for q in unseen}, {q: dev_first[q] for q in unseen}, benchmark.qrels
    )
    metadata = read_rerank_metadata(model_dir)
    metadata.update(
        {
            "interpolation_weight": weight,
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
        "interpolation_weight": weight,
        "curve": curve,
        "unseen_curve": unseen_curve,
        "unseen": len(unseen),
    }
