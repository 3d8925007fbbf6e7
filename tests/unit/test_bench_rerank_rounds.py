"""`bench rerank --rounds`: the variants alternate, each round starting one place further down the list, so
no variant always runs first (or last) on a machine whose load drifts."""

from __future__ import annotations

from hybrid_rerank.connector.lab.bench_rerank import Variant, alternating


def test_each_round_runs_every_variant_once_starting_one_place_further() -> None:
    a, b, c = (Variant(name, "onnx", 128) for name in "abc")
    order = alternating([a, b, c], 3)
    assert [(r, v.name) for r, v in order] == [
        (0, "a"), (0, "b"), (0, "c"),
        (1, "b"), (1, "c"), (1, "a"),
        (2, "c"), (2, "a"), (2, "b"),
    ]  # fmt: skip
    assert alternating([a], 2) == [(0, a), (1, a)]
