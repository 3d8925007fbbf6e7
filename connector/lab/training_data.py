"""The data `train-reranker` learns from, and the interpolation tuning, as pure functions: which queries are
held out, which negatives each positive gets, which pseudo-queries the corpus yields, which rerank weight the
dev split prefers."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.lab.evaluation import evaluate_run
from hybrid_rerank.connector.stages import rerank_order

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
    # "documents": no training query (nor training pseudo-query) cites a document a dev query cites, so the
    # dev score is not lifted by twins of training queries; "random": a plain seeded shuffle.
    dev_split: Literal["documents", "random"] = "documents"
    # Layers whose [CLS] state the model's own head must score (the listwise loss averaged over them), so a
    # model cut to k layers stays usable. None: every third of the layers where the architecture's head is
    # known (2, 4, 6 for MiniLM-L6); (): the last layer only.
    layerwise: tuple[int, ...] | None = None
    time_budget_minutes: float | None = None  # stop (dev scored, checkpoint saved) before overrunning it
    unlabeled: bool = False  # no qrels: pseudo-queries only, the dev split made of held-out documents


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


def split_dev_by_documents(
    qrels: Mapping[str, Mapping[str, int]], dev_size: int, seed: int
) -> tuple[list[str], list[str]]:
    """(train, dev) where no training query cites a document a dev query cites: queries joined by a shared
    relevant document form one group, and whole groups are drawn (seeded) into dev until it is full."""
    root: dict[str, str] = {}

    def find(node: str) -> str:
        while root.setdefault(node, node) != node:
            root[node] = root[root[node]]
            node = root[node]
        return node

    for query_id in sorted(qrels):
        for doc_id, grade in sorted(qrels[query_id].items()):
            if grade > 0:
                root[find("q:" + query_id)] = find("d:" + doc_id)
    groups: dict[str, list[str]] = {}
    for query_id in sorted(qrels):
        groups.setdefault(find("q:" + query_id), []).append(query_id)
    ordered = sorted(groups.values())
    random.Random(seed).shuffle(ordered)
    limit = min(max(dev_size, 0), len(qrels) // 2)
    dev: list[str] = []
    for group in ordered:
        if len(dev) + len(group) <= limit:
            dev.extend(group)
    held = set(dev)
    return sorted(q for q in qrels if q not in held), sorted(dev)


def relevant_documents(qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str]) -> set[str]:
    return {d for q in query_ids for d, grade in qrels[q].items() if grade > 0}


def hold_out_documents(
    documents: Sequence[Document], count: int, rng: random.Random
) -> tuple[list[Document], dict[str, str], dict[str, dict[str, int]]]:
    """A label-free dev split: `count` documents each give one pseudo-query (alternately its title or one of
    its sentences) and are indexed *without* that text, so neither stage finds them by copying the query.
    Returns (the corpus with those documents cut, dev queries, dev qrels)."""
    candidates = [d for d in documents if d.text.strip()]
    rng.shuffle(candidates)
    cut: dict[str, Document] = {}
    queries: dict[str, str] = {}
    for doc in candidates:
        if len(cut) >= count:
            break
        sentence, rest = pick_sentence(doc.text, rng)
        if len(cut) % 2 == 0 and doc.title.strip():
            queries[doc.id], cut[doc.id] = doc.title.strip(), replace(doc, title="")
        elif sentence:
            queries[doc.id], cut[doc.id] = sentence, replace(doc, text=rest)
    corpus = [cut.get(d.id, d) for d in documents]
    dev_ids = {doc_id: f"pseudo-dev-{doc_id}" for doc_id in queries}
    return (
        corpus,
        {dev_ids[d]: text for d, text in queries.items()},
        {dev_ids[d]: {d: 1} for d in queries},
    )


def layer_plan(num_layers: int, requested: Sequence[int] | None) -> list[int]:
    """The layers the layerwise loss reads: `requested` checked, or every third of the stack (None)."""
    if requested is None:
        return sorted({max(round(num_layers * share / 3), 1) for share in (1, 2, 3)})
    layers = sorted(set(requested)) or [num_layers]
    wrong = [k for k in layers if not 1 <= k <= num_layers]
    if wrong:
        raise ValueError(f"layerwise layers {wrong} are outside 1..{num_layers} (the model's layer count)")
    return layers


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
            run[query_id] = rerank_order(ranked, rerank[query_id], len(rerank[query_id]), weight)[0]
        curve[weight] = evaluate_run(run, {q: qrels[q] for q in first})["ndcg@10"]
    # Pick on the curve averaged with its neighbours: a lone spike between two dips is dev noise, a plateau
    # is not, and its middle keeps working when the test queries differ a little.
    weights = list(curve)
    smoothed = {
        w: float(np.mean([curve[v] for v in weights[max(i - 1, 0) : i + 2]])) for i, w in enumerate(weights)
    }
    best = max(weights, key=lambda w: (round(smoothed[w], 6), -w))
    return best, curve
