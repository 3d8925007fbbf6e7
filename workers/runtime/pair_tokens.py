"""Cross-encoder inputs tokenized once per distinct text.

A top-100 rerank reads one query beside 100 documents; the tokenizer's pair call tokenizes the query 100
times and every document again for each query that retrieves it. Here each distinct text is tokenized once
(without special tokens) and kept in a bounded LRU that outlives a request, and the pair inputs are assembled
from the pieces: the model's pair template ([CLS] q [SEP] d [SEP], <s> q </s></s> d </s>, ...) read off the
tokenizer itself, and the `longest_first` truncation of the tokenizers library (what `truncation=True`
means), so the ids equal the tokenizer's own pair call (tests compare them on BERT, XLM-R and ModernBERT).

Only the `tokenizers` library is needed: a folder's tokenizer.json loads without transformers (and torch).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hybrid_rerank.workers.runtime.models import RECIPE_FILE

# Distinct texts whose tokens are kept: a few hundred top-100 result lists of documents.
TEXT_CACHE_SIZE = 4096
# transformers' default when a tokenizer's config names no input names (BERT reads token types).
DEFAULT_INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
# Tokenizer classes that read no token types when their config does not list input names.
NO_TOKEN_TYPES = ("XLMRoberta", "Roberta", "Camembert", "ModernBert", "Deberta", "Electra")
# Tokenizer classes that transformers 5 runs with tokenizer.json's pipeline as saved (tests compare the ids).
# Others (XLM-R among them) replace its normalizer or pre-tokenizer with their own at load, so their
# tokenizer.json is read alone only when `export-reranker` saved the pipeline transformers runs.
VERBATIM_CLASSES = ("BertTokenizer", "BertTokenizerFast", "PreTrainedTokenizerFast", "TokenizersBackend")
# onnx_export.json's key and value that say tokenizer.json holds the pipeline transformers runs.
TOKENIZER_MARK = ("tokenizer_json", "transformers backend")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class TextTokens(NamedTuple):
    """A text's token ids without special tokens, and each token's character span."""

    ids: np.ndarray  # int64, (n,)
    offsets: np.ndarray  # int64, (n, 2)


@dataclass(frozen=True)
class PairTemplate:
    """Where the special tokens go around a pair (prefix A middle B suffix), with each part's token types."""

    prefix: np.ndarray
    middle: np.ndarray
    suffix: np.ndarray
    prefix_types: np.ndarray
    middle_types: np.ndarray
    suffix_types: np.ndarray
    first_type: int
    second_type: int

    @property
    def added(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def read_pair_template(backend: Any) -> PairTemplate | None:
    """The pair template of a `tokenizers.Tokenizer`, read from its post-processor on a probe pair; None
    when the template is not `specials A specials B specials` (then the caller uses the pair call)."""
    first = backend.encode("what is a sun", add_special_tokens=False)
    second = backend.encode("the light of a star", add_special_tokens=False)
    if not first.ids or not second.ids:
        return None
    pair = backend.post_process(first, second, add_special_tokens=True)
    ids, types = np.asarray(pair.ids, dtype=np.int64), np.asarray(pair.type_ids, dtype=np.int64)
    content = [i for i, special in enumerate(pair.special_tokens_mask) if not special]
    a, b = content[: len(first.ids)], content[len(first.ids) :]
    if not a or not b or a != list(range(a[0], a[-1] + 1)) or b != list(range(b[0], b[-1] + 1)):
        return None
    if ids[a].tolist() != first.ids or ids[b].tolist() != second.ids:
        return None
    if len(set(types[a].tolist())) != 1 or len(set(types[b].tolist())) != 1:
        return None
    head, middle, tail = slice(0, a[0]), slice(a[-1] + 1, b[0]), slice(b[-1] + 1, len(ids))
    return PairTemplate(
        ids[head],
        ids[middle],
        ids[tail],
        types[head],
        types[middle],
        types[tail],
        int(types[a[0]]),
        int(types[b[0]]),
    )


def longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each side under the tokenizers library's `longest_first` truncation (its
    `truncate_encodings`): the longer side is cut first, and when both must be cut they share the budget
    evenly (the second side gets the odd token)."""
    if first + second <= budget:
        return first, second
    short, long = sorted((first, second))
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short = budget // 2
        long = short + budget % 2
    keep_first, keep_second = (long, short) if first > second else (short, long)
    return min(first, keep_first), min(second, keep_second)


class PairEncoder:
    """Token ids of (query, document) pairs with each distinct text tokenized once."""

    def __init__(
        self,
        backend: Any,
        template: PairTemplate,
        *,
        truncation_side: str = "right",
        token_types: bool = True,
        pad_id: int = 0,
        cache_size: int = TEXT_CACHE_SIZE,
    ) -> None:
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.template = template
        self.truncation_side = truncation_side
        self.token_types = token_types
        self.pad_id = pad_id
        self.cache_size = cache_size
        self._cache: OrderedDict[str, TextTokens] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def added(self) -> int:
        """Special tokens a pair adds ([CLS], [SEP], ...)."""
        return self.template.added

    def encode(self, texts: Sequence[str]) -> list[TextTokens]:
        """Each text tokenized now, not cached (pieces of words, which would push documents out)."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False) if texts else []
        return [
            TextTokens(
                np.asarray(e.ids, dtype=np.int64), np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)
            )
            for e in encodings
        ]

    def tokens(self, texts: Sequence[str]) -> list[TextTokens]:
        """Each text's tokens: from the cache, else tokenized now (the misses in one batch call)."""
        with self._lock:
            found = {t: self._cache[t] for t in dict.fromkeys(texts) if t in self._cache}
            for text in found:
                self._cache.move_to_end(text)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            found.update(zip(missing, self.encode(missing), strict=True))
            with self._lock:
                for text in missing:
                    self._cache[text] = found[text]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [found[t] for t in texts]

    def _cut(self, ids: np.ndarray, keep: int) -> np.ndarray:
        if keep >= len(ids):
            return ids
        return ids[len(ids) - keep :] if self.truncation_side == "left" else ids[:keep]

    def pair_rows(
        self, queries: Sequence[TextTokens], documents: Sequence[TextTokens], max_length: int
    ) -> list[dict[str, np.ndarray]]:
        """One row of model inputs per pair, truncated to `max_length` as `truncation=True` does."""
        t = self.template
        budget = max_length - t.added
        rows: list[dict[str, np.ndarray]] = []
        for query, document in zip(queries, documents, strict=True):
            keep_q, keep_d = longest_first(len(query.ids), len(document.ids), budget)
            q, d = self._cut(query.ids, keep_q), self._cut(document.ids, keep_d)
            row = {"input_ids": np.concatenate((t.prefix, q, t.middle, d, t.suffix))}
            if self.token_types:
                row["token_type_ids"] = np.concatenate(
                    (
                        t.prefix_types,
                        np.full(len(q), t.first_type, dtype=np.int64),
                        t.middle_types,
                        np.full(len(d), t.second_type, dtype=np.int64),
                        t.suffix_types,
                    )
                )
            rows.append(row)
        return rows


def pair_encoder_from_transformers(tokenizer: Any, cache_size: int = TEXT_CACHE_SIZE) -> PairEncoder | None:
    """A PairEncoder over a copy of a fast transformers tokenizer's backend (the tokenizer itself sets
    truncation on its backend at every call), or None for a slow tokenizer or an unusual template."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    template = read_pair_template(copy)
    if template is None:
        return None
    return PairEncoder(
        copy,
        template,
        truncation_side=str(getattr(tokenizer, "truncation_side", "right")),
        token_types="token_type_ids" in tokenizer.model_input_names,
        pad_id=int(tokenizer.pad_token_id or 0),
        cache_size=cache_size,
    )


def pair_encoder_from_folder(folder: Path, cache_size: int = TEXT_CACHE_SIZE) -> PairEncoder | None:
    """A PairEncoder read from the folder's tokenizer.json with the `tokenizers` library alone (no
    transformers), its truncation side and input names from tokenizer_config.json; None when the folder has
    no tokenizer.json, transformers would run another pipeline than the file's (see VERBATIM_CLASSES), or
    its template is unusual."""
    from tokenizers import Tokenizer

    if not (folder / "tokenizer.json").is_file():
        return None
    config = read_json(folder / "tokenizer_config.json")
    marked = read_json(folder / RECIPE_FILE).get(TOKENIZER_MARK[0]) == TOKENIZER_MARK[1]
    if not marked and config.get("tokenizer_class") not in VERBATIM_CLASSES:
        return None
    backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    backend.no_truncation()
    backend.no_padding()
    template = read_pair_template(backend)
    if template is None:
        return None
    names = config.get("model_input_names")
    if isinstance(names, list):
        token_types = "token_type_ids" in names
    else:
        tokenizer_class = str(config.get("tokenizer_class") or "")
        token_types = not tokenizer_class.startswith(NO_TOKEN_TYPES)
    pad_token = config.get("pad_token")
    if isinstance(pad_token, dict):  # an AddedToken saved as its fields
        pad_token = pad_token.get("content")
    return PairEncoder(
        backend,
        template,
        truncation_side=str(config.get("truncation_side") or "right"),
        token_types=token_types,
        pad_id=int(backend.token_to_id(str(pad_token)) or 0) if pad_token else 0,
        cache_size=cache_size,
    )
