"""The BM25 tokenizer of the embedded backend, for English and Chinese text.

It mirrors the analyzer of the OpenSearch mapping so both backends rank alike: width-normalized (NFKC),
lower-cased words, Lucene's English stop words removed, Porter-stemmed; runs of CJK ideographs become
overlapping bigrams (a lone ideograph stays a unigram), as Lucene's `cjk_bigram` filter does.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import snowballstemmer

# Lucene's EnglishAnalyzer stop set, which OpenSearch's `_english_` stop filter uses.
ENGLISH_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")

_stemmer = snowballstemmer.stemmer("porter")

# Bump when `tokenize` changes: stored terms of an older version are recomputed on load.
TOKENIZER_VERSION = 1


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


def tokenize(text: str) -> list[str]:
    """Index and query terms for `text`."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).lower()):
        run = match.group()
        if _IS_CJK.match(run):
            if len(run) == 1:
                tokens.append(run)
            else:
                tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in ENGLISH_STOP_WORDS:
            tokens.append(_stem(run))
    return tokens
