"""Long documents as overlapping passages that each fit the model's window beside the query (MaxP, Dai &
Callan 2019): the windows are cut at token boundaries of the document's own tokenization, and a window whose
edges fall between words reuses those tokens instead of tokenizing its text again."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybrid_rerank.workers.runtime.pair_tokens import PairEncoder, TextTokens

# The query keeps at most this share of the window; the document gets the rest.
MAX_QUERY_SHARE = 0.5
# Consecutive passages overlap by this share of a passage, so no sentence is cut at every boundary.
PASSAGE_OVERLAP = 0.25


def passage_budget(max_length: int, added: int, query_tokens: int) -> int:
    """Document tokens a passage holds beside a query of `query_tokens` tokens (`added` special tokens)."""
    window = max_length - added
    return max(window - min(query_tokens, int(window * MAX_QUERY_SHARE)), 1)


def window_spans(tokens: int, budget: int, max_passages: int) -> list[tuple[int, int]]:
    """[start, end) token spans of up to `max_passages` windows of `budget` tokens, a step apart."""
    if tokens <= budget:
        return [(0, tokens)]
    step = max(int(budget * (1 - PASSAGE_OVERLAP)), 1)
    spans: list[tuple[int, int]] = []
    for start in range(0, tokens, step):
        end = min(start + budget, tokens)
        spans.append((start, end))
        if end == tokens or len(spans) == max_passages:
            break
    return spans


def window_texts(text: str, offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> list[str]:
    """The text of each span (the whole text for a single span over every token)."""
    if len(spans) == 1 and spans[0] == (0, len(offsets)):
        return [text]
    return [text[offsets[start][0] : offsets[end - 1][1]] for start, end in spans]


def window_tokens(
    pairs: PairEncoder, text: str, tokens: TextTokens, spans: Sequence[tuple[int, int]]
) -> list[TextTokens]:
    """The tokens of each window's text, as if it were tokenized on its own, mostly without tokenizing it:
    a pre-tokenizer that splits on whitespace tokenizes each whitespace-separated chunk alone, so the
    window's whole chunks keep the document's tokens and only a chunk cut at either edge (a word cut in two
    reads differently) is tokenized again. Byte-level BPE keeps the space in the next token (no gaps in the
    offsets): its windows are tokenized whole."""
    offsets = tokens.offsets
    count = len(offsets)

    def chunk_start(index: int) -> bool:  # whitespace between token index-1 and token index
        if index in (0, count):
            return True
        return text[int(offsets[index - 1, 1]) : int(offsets[index, 0])].isspace()

    plans: list[tuple[int, int, int, int]] = []  # start, first whole chunk, end of whole chunks, end
    pieces: list[str] = []
    for start, end in spans:
        inner = start
        while inner < end and not chunk_start(inner):
            inner += 1
        outer = end
        if inner < end and not chunk_start(end):
            outer = end - 1
            while outer > inner and not chunk_start(outer):
                outer -= 1
        for first, last in ((start, inner), (outer, end)):
            if first < last:
                pieces.append(text[int(offsets[first, 0]) : int(offsets[last - 1, 1])])
        plans.append((start, inner, outer, end))
    fresh = iter(pairs.encode(pieces))
    windows: list[TextTokens] = []
    for start, inner, outer, end in plans:
        parts = [next(fresh).ids] if start < inner else []
        parts.append(tokens.ids[inner:outer])
        if outer < end:
            parts.append(next(fresh).ids)
        windows.append(TextTokens(np.concatenate(parts), offsets[start:end]))
    return windows
