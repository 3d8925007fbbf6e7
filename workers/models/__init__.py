"""Models shipped inside the package, so they load with no network."""

from pathlib import Path

# The compact cross-encoder trained by `hybrid-rerank train-reranker` on SciFact and exported to int8 ONNX:
# the offline default reranker (see its README.md for data, licence and figures).
SCIFACT_RERANKER_NAME = "scifact-minilm-l6-reranker-int8"
SCIFACT_RERANKER_DIR = Path(__file__).parent / SCIFACT_RERANKER_NAME
