"""Length-sorted token-budget batching: the one loop every model runner is driven by.

Inputs are tokenized once, sorted by length and packed into batches up to a token budget (so a batch of short
inputs is wide and a batch of long inputs narrow), each batch padded only to its own longest input, and the
outputs put back in the input order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class PairRunner(Protocol):
    """Model outputs (logits, or hidden states) for one padded batch of tokenized inputs."""

    description: str

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


def token_budget_batches(lengths: Sequence[int], token_budget: int, max_batch: int) -> list[list[int]]:
    """Indices grouped longest first into batches whose padded size (rows x longest row) stays within
    `token_budget`, at most `max_batch` rows each; a row longer than the budget gets a batch of its own."""
    if token_budget < 1 or max_batch < 1:
        raise ValueError("token_budget and max_batch must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        widest = lengths[current[0]] if current else lengths[index]
        if current and (len(current) >= max_batch or (len(current) + 1) * widest > token_budget):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


Pool = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (model output, attention mask) -> one row per input


def first_logit(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return output.reshape(len(mask), -1)[:, 0]


def mean_pool(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token states under the attention mask (sentence-transformers' mean pooling)."""
    weights = mask[:, :, None].astype(np.float32)
    return np.asarray((output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None))


def cls_pool(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(output[:, 0, :])


def encoded_rows(
    encoded: Mapping[str, Sequence[Sequence[int]]], count: int
) -> list[dict[str, Sequence[int]]]:
    """A tokenizer's batch output (unpadded) as one row per input, with the ids `run_batched` reads."""
    names = [name for name in ("input_ids", "token_type_ids") if name in encoded]
    return [{name: encoded[name][i] for name in names} for i in range(count)]


def run_batched(
    runner: PairRunner,
    encoded: Sequence[Mapping[str, Sequence[int]]],
    token_budget: int,
    max_batch: int,
    pad_id: int,
    pool: Pool = first_logit,
    progress: Callable[[int], None] | None = None,
    *,
    left_pad: bool = False,
) -> np.ndarray:
    """`pool` of the model's output for each encoded input, in the input order (one logit per pair by
    default). `progress(done)` is called after each batch. `left_pad` puts the padding before each row
    (causal LMs read their answer at the last position)."""
    lengths = [len(e["input_ids"]) for e in encoded]
    rows: list[np.ndarray | None] = [None] * len(encoded)
    done = 0
    for batch in token_budget_batches(lengths, token_budget, max_batch):
        width = max(lengths[i] for i in batch)
        arrays = {name: np.zeros((len(batch), width), dtype=np.int64) for name in INPUT_NAMES}
        arrays["input_ids"].fill(pad_id)
        for row, index in enumerate(batch):
            n = lengths[index]
            cells = slice(width - n, width) if left_pad else slice(0, n)
            arrays["input_ids"][row, cells] = encoded[index]["input_ids"]
            arrays["attention_mask"][row, cells] = 1
            if "token_type_ids" in encoded[index]:
                arrays["token_type_ids"][row, cells] = encoded[index]["token_type_ids"]
        pooled = pool(runner(arrays), arrays["attention_mask"])
        for row, index in enumerate(batch):
            rows[index] = pooled[row]
        done += len(batch)
        if progress is not None:
            progress(done)
    if not rows:
        return np.zeros((0,), dtype=np.float32)
    return np.stack([r for r in rows if r is not None]).astype(np.float32, copy=False)
