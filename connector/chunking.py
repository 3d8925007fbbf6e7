"""Index-time passages: a long document cut into overlapping windows of the bi-encoder's own tokens.

A bi-encoder reads its first `max_seq_length` tokens (256 for all-MiniLM-L6-v2) and ignores the rest, so a
long document's vector says nothing of its later text. With passages, a document longer than one window is
cut into windows of `tokens` tokens, consecutive windows sharing `overlap` tokens so no sentence is only ever
cut at a boundary, and each window gets its own vector. Windows are counted in the model's tokenizer (word
pieces, not words) and kept as character offsets into the document's text, so a hit can say where it
matched and the reranker can read that passage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_rerank.connector.backends.base import Passage
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import ConfigurationError

TokenOffsets = Callable[[str], list[tuple[int, int]]]  # text -> each token's (start, end) character offsets


@dataclass(frozen=True)
class PassageOptions:
    """Window size and overlap, in the bi-encoder's tokens."""

    tokens: int = 200
    overlap: int = 50

    def __post_init__(self) -> None:
        if self.tokens < 1 or not 0 <= self.overlap < self.tokens:
            raise ConfigurationError(
                f"passages of {self.tokens} tokens overlapping by {self.overlap}: the size must be at least "
                "1 and the overlap at least 0 and below the size (e.g. --passage-tokens 200 "
                "--passage-overlap 50)"
            )

    @property
    def label(self) -> str:
        """What an index records: a passage index built with other options is not mixed with this one."""
        return f"{self.tokens}/{self.overlap} tokens"


def passage_spans(text: str, offsets: Sequence[tuple[int, int]], options: PassageOptions) -> list[Passage]:
    """The passages of `text`, given its tokens' character offsets: one covering the whole text when it
    fits one window, else windows of `options.tokens` tokens starting every `tokens - overlap` tokens, the
    last one ending at the text's last token. The first passage starts at 0 and the last ends at the end of
    the text, so every character is in some passage."""
    if len(offsets) <= options.tokens:
        return [Passage(0, len(text))]
    step = options.tokens - options.overlap
    # The last window ends at the last token (so it may overlap the one before by more than `overlap`).
    starts = [*range(0, len(offsets) - options.tokens, step), len(offsets) - options.tokens]
    spans = []
    for first in starts:
        last = first + options.tokens - 1
        start = 0 if first == 0 else offsets[first][0]
        end = len(text) if last == len(offsets) - 1 else offsets[last][1]
        spans.append(Passage(start, end))
    return spans


class PassageSplitter:
    """Cuts documents into passages with a tokenizer's offsets (`token_offsets`)."""

    def __init__(self, token_offsets: TokenOffsets, options: PassageOptions) -> None:
        self.token_offsets = token_offsets
        self.options = options

    @property
    def label(self) -> str:
        return self.options.label

    def spans(self, text: str) -> list[Passage]:
        return passage_spans(text, self.token_offsets(text), self.options)

    def passage_documents(self, document: Document, spans: Sequence[Passage]) -> list[Document]:
        """What the bi-encoder embeds for each passage: the document's title with the passage's text, so
        every passage keeps the context the title gives (and the embedder adds its passage prompt)."""
        return [
            Document(id=document.id, text=document.text[span.start : span.end], title=document.title)
            for span in spans
        ]


def tokenizer_offsets(tokenizer: Any) -> TokenOffsets:
    """`TokenOffsets` of a Hugging Face fast tokenizer (no special tokens: they are not text)."""

    def offsets(text: str) -> list[tuple[int, int]]:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(start), int(end)) for start, end in encoded["offset_mapping"] if end > start]

    return offsets


def model_splitter(
    model_location: str, options: PassageOptions, *, trust_remote_code: bool = False
) -> PassageSplitter:
    """A splitter counting in the tokenizer of the bi-encoder folder at `model_location`."""
    from hybrid_rerank.workers.runtime.models import load_tokenizer

    folder = Path(model_location)
    if not folder.is_dir():
        raise ConfigurationError(
            f"passages are counted in the bi-encoder's tokenizer, but {model_location!r} is not a local "
            "folder; set EMBEDDING_MODEL to a local sentence-transformers folder"
        )
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigurationError(
            f"the tokenizer of {model_location!r} gives no character offsets (not a fast tokenizer); "
            "passages need one"
        )
    return PassageSplitter(tokenizer_offsets(tokenizer), options)
