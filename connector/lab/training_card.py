"""The files `train-reranker` writes beside the weights: hybrid_rerank.json (the tuned interpolation weight,
the dev split, the layerwise figures) and the model card."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybrid_rerank.workers.runtime.models import RERANK_METADATA


def write_metadata(folder: Path, weight: float, max_length: int, report: Mapping[str, Any]) -> None:
    metadata = {
        "interpolation_weight": weight,
        "trained_max_length": max_length,
        "fusion": report.get("fusion"),
        "dev": report.get("dev"),
        "dev_split": report.get("dev_split"),
    }
    if "layerwise" in report:
        metadata["layerwise"] = report["layerwise"]
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
