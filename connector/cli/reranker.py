"""`hybrid-rerank train-reranker`, `tune-reranker` and `export-reranker` (lab extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import (
    TRAINING_MODULES,
    app,
    err,
    load,
    out,
    require_lab,
    staged_progress,
)


@app.command("train-reranker")
def train_reranker_command(
    dataset: Annotated[
        Path, typer.Argument(help="BEIR folder with a training qrels split (--unlabeled: any corpus)")
    ],
    output: Annotated[Path, typer.Option("--out", help="the model folder to write")] = Path(
        "models/reranker"
    ),
    base_model: Annotated[
        str,
        typer.Option(
            "--base",
            "--base-model",
            help="where training starts: a local folder (a bi-encoder or an existing cross-encoder) or a "
            "packaged model name",
        ),
    ] = "all-MiniLM-L6-v2",
    unlabeled: Annotated[
        bool,
        typer.Option(
            "--unlabeled",
            help="no qrels: pseudo-queries from the corpus alone, dev from held-out documents",
        ),
    ] = False,
    layerwise: Annotated[
        str,
        typer.Option(
            help="layers whose [CLS] state the model's head must score, e.g. 2,4,6 (so a cut model stays "
            "usable); auto: every third of the layers where the head is known; none: last layer only",
        ),
    ] = "auto",
    dev_split: Annotated[
        str,
        typer.Option(help="documents: dev queries cite no document a training query cites; random"),
    ] = "documents",
    split: Annotated[str, typer.Option(help="qrels split to train on (never test)")] = "train",
    dev_queries: Annotated[int, typer.Option(min=0, help="training queries held out as dev")] = 100,
    max_train_queries: Annotated[int | None, typer.Option(min=1, help="use only N training queries")] = None,
    title_queries: Annotated[int, typer.Option(help="title pseudo-queries (-1: all titled docs)")] = -1,
    sentence_queries: Annotated[int, typer.Option(min=0, help="sentence pseudo-queries")] = 2000,
    negatives: Annotated[int, typer.Option(min=1, help="hard negatives per example")] = 4,
    real_repeats: Annotated[int, typer.Option(min=1, help="times each qrels pair is seen per epoch")] = 2,
    epochs: Annotated[float, typer.Option(min=0.0)] = 1.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 3e-5,
    max_length: Annotated[int, typer.Option(min=16)] = 128,
    eval_steps: Annotated[int, typer.Option(min=1, help="score the dev split every N steps")] = 200,
    seed: Annotated[int, typer.Option()] = 13,
    time_budget: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="minutes of training at most (a shared machine): stop before the next step would overrun, "
            "score dev, keep the best checkpoint",
        ),
    ] = None,
) -> None:
    """Fine-tune a cross-encoder: qrels positives, hard negatives from our hybrid recall, pseudo-queries."""
    require_lab(*TRAINING_MODULES)
    from hybrid_rerank.connector.lab.training import train_reranker
    from hybrid_rerank.connector.lab.training_data import TrainingConfig

    if split == "test" and not unlabeled:
        raise typer.BadParameter("training on the test split would make every test figure meaningless")
    if dev_split not in ("documents", "random"):
        raise typer.BadParameter(f"--dev-split is documents or random, not {dev_split!r}")
    config = TrainingConfig(
        unlabeled=unlabeled,
        layerwise=parse_layers(layerwise),
        dev_split="documents" if dev_split == "documents" else "random",
        base_model=base_model,
        split=split,
        dev_queries=dev_queries,
        max_train_queries=max_train_queries,
        title_queries=title_queries,
        sentence_queries=sentence_queries,
        negatives=negatives,
        real_repeats=real_repeats,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        eval_steps=eval_steps,
        seed=seed,
        time_budget_minutes=time_budget,
    )
    settings = load()
    with staged_progress() as progress:
        report = train_reranker(
            settings, dataset, output, config, progress=progress, log=lambda m: err.print(m, highlight=False)
        )
    out.print(
        f"model written to {output}: dev nDCG@10 first stage {report['dev']['first_stage_ndcg@10']:.4f}, "
        f"rerank {report['dev']['rerank_ndcg@10']:.4f}, "
        f"interpolated {report['dev']['interpolated_ndcg@10']:.4f} "
        f"(rerank weight {report['interpolation_weight']}); trained in {report['train_seconds']:.0f} s",
        highlight=False,
    )
    if "layerwise" in report:
        per_layer = report["layerwise"]
        out.print(
            "per layer (dev): "
            + ", ".join(
                f"layer {k}: rerank {per_layer['dev_ndcg@10'][str(k)]:.4f}, "
                f"weight {per_layer['interpolation_weights'][str(k)]}"
                for k in per_layer["layers"]
            ),
            highlight=False,
        )


def parse_layers(text: str) -> tuple[int, ...] | None:
    """--layerwise: None for auto, () for none, else the listed layers."""
    cleaned = text.strip().lower()
    if cleaned == "auto":
        return None
    if cleaned in ("none", "off", ""):
        return ()
    try:
        return tuple(int(part) for part in cleaned.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"--layerwise takes auto, none or layer numbers like 2,4,6; got {text!r}"
        ) from None


@app.command("tune-reranker")
def tune_reranker_command(
    model_dir: Annotated[Path, typer.Argument(help="a model folder train-reranker wrote (or its export)")],
    dataset: Annotated[Path, typer.Argument(help="the BEIR folder it was trained on")],
    split: Annotated[str, typer.Option(help="the training split")] = "train",
    dev_queries: Annotated[int, typer.Option(min=1, help="as in train-reranker")] = 100,
    seed: Annotated[int, typer.Option()] = 13,
) -> None:
    """Tune the rerank/first-stage interpolation weight again for the current RERANK_* settings, on the
    training split's held-out dev queries (never test), and store it in the model folder."""
    require_lab()
    from hybrid_rerank.connector.lab.tuning import retune_interpolation

    if split == "test":
        raise typer.BadParameter("tuning on the test split would make every test figure meaningless")
    with staged_progress() as progress:
        result = retune_interpolation(
            load(),
            dataset,
            model_dir,
            split=split,
            dev_queries=dev_queries,
            seed=seed,
            progress=progress,
        )
    curve = result["curve"]
    best = result["interpolation_weight"]
    out.print(
        f"rerank weight {best} (dev nDCG@10 {curve[best]:.4f}; first stage {curve[0.0]:.4f}, "
        f"rerank only {curve[1.0]:.4f}) written to {model_dir / 'hybrid_rerank.json'}",
        highlight=False,
    )
    unseen = result["unseen_curve"]
    out.print(
        f"the {result['unseen']} dev queries whose relevant documents no training query cites: first stage "
        f"{unseen[0.0]:.4f}, at weight {best} {unseen[best]:.4f}, rerank only {unseen[1.0]:.4f}",
        highlight=False,
    )


@app.command("export-reranker")
def export_reranker_command(
    model_dir: Annotated[Path, typer.Argument(help="a cross-encoder folder with torch weights")],
    output: Annotated[Path, typer.Option("--out", help="the ONNX folder to write")],
    int8: Annotated[bool, typer.Option("--int8/--fp32", help="dynamic int8 quantization")] = True,
    layers: Annotated[
        int | None, typer.Option(min=1, help="keep only the first N transformer layers (measure before use)")
    ] = None,
) -> None:
    """Export a cross-encoder to a self-contained ONNX folder (int8 by default) that runs without torch
    weights; RERANK_MODEL can point at it."""
    from hybrid_rerank.workers.runtime.onnx_export import export_folder

    onnx_file = export_folder(
        model_dir, output, int8=int8, layers=layers, trust_remote_code=load().trust_remote_code
    )
    card = model_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        note = (
            f"\n## This folder\n\n`{onnx_file.name}`: {'dynamic int8' if int8 else 'fp32'} ONNX export of "
            f"`{model_dir.name}` made by "
            f"`hybrid-rerank export-reranker {model_dir.name} --out {output.name}`, "
            "run with onnxruntime; no torch weights.\n"
        )
        (output / "README.md").write_text(text + note, encoding="utf-8")
    size = sum(f.stat().st_size for f in output.iterdir() if f.is_file())
    out.print(f"wrote {output}: {onnx_file.name}, {size / 1e6:.1f} MB in all", highlight=False)
