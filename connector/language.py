"""Which languages the models read, and a cheap guess at which one a query is written in.

A model declares its languages in its folder (the model card's front matter `language:`, or `"languages"` in
its hybrid_rerank.json) or through a setting (EMBEDDING_LANGUAGES, RERANK_LANGUAGES). A query's language is
guessed from its script alone: no dictionary, no model, microseconds per query. Scripts that one language
owns name it (Han -> zh, kana -> ja, Hangul -> ko, Greek -> el, Hebrew -> he, Thai -> th); scripts that many
share name the script (latin, cyrillic, arabic, devanagari), and a model reads such a query when it reads any
language of that script. So an English-only model passes a German query: telling Latin-script languages apart
needs word statistics this guard does without.

`LanguageGuard.plan(query)` says what the pipeline does with a query the models do not read: the bi-encoder
is left out (BM25 alone) and the reranker is skipped, each with a note. When in doubt (no letters, a script
not listed here, a language code not listed here) the guard lets the models through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANY_LANGUAGE = "*"
_ANY_WORDS = frozenset({ANY_LANGUAGE, "any", "multilingual", "mul"})

# Code point ranges of the scripts the guard tells apart (Latin letters are the rest of `str.isalpha` below
# U+0250, plus Latin Extended Additional for Vietnamese).
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x024F, "latin"),
    (0x1E00, 0x1EFF, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x1F00, 0x1FFF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0xFB50, 0xFDFF, "arabic"),
    (0xFE70, 0xFEFF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"),
    (0x3130, 0x318F, "hangul"),
    (0xAC00, 0xD7AF, "hangul"),
    (0x3040, 0x30FF, "kana"),
    (0x31F0, 0x31FF, "kana"),
    (0xFF66, 0xFF9D, "kana"),
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xF900, 0xFAFF, "han"),
    (0x20000, 0x2FA1F, "han"),
)
# A Han character or a Hangul syllable carries about a word's worth of meaning; a letter does not.
_SYLLABIC = frozenset({"han", "kana", "hangul"})
_SYLLABLE_WEIGHT = 3
# What a result reports for each script: the language where one owns the script, else the script.
SCRIPT_LABELS: Mapping[str, str] = {
    "han": "zh",
    "kana": "ja",
    "hangul": "ko",
    "greek": "el",
    "hebrew": "he",
    "thai": "th",
    "latin": "latin",
    "cyrillic": "cyrillic",
    "arabic": "arabic",
    "devanagari": "devanagari",
}

_SHARED_SCRIPTS = {
    "latin": "en fr de es it pt nl sv da no nb nn fi et lv lt pl cs sk sl hr bs hu ro tr az vi id ms tl ca "
    "gl eu ga cy is mt sq af sw so ha yo ig zu xh eo la lb fo fy gd br co oc ht mg mi sm to jv su ceb rm "
    "wa ast",
    "cyrillic": "ru uk be bg mk kk ky mn tg tt ba cv ce os ab",
    "arabic": "ar fa ur ps ku sd ug ckb",
    "devanagari": "hi mr ne sa mai bho",
}
# The scripts a model reading each language reads. A code not listed is "unknown": the guard lets it pass.
LANGUAGE_SCRIPTS: Mapping[str, frozenset[str]] = {
    **{code: frozenset({script}) for script, codes in _SHARED_SCRIPTS.items() for code in codes.split()},
    "sr": frozenset({"latin", "cyrillic"}),
    "uz": frozenset({"latin", "cyrillic"}),
    "zh": frozenset({"han"}),
    "yue": frozenset({"han"}),
    "ja": frozenset({"han", "kana"}),
    "ko": frozenset({"hangul"}),
    "el": frozenset({"greek"}),
    "he": frozenset({"hebrew"}),
    "iw": frozenset({"hebrew"}),
    "yi": frozenset({"hebrew"}),
    "th": frozenset({"thai"}),
}
# Models whose folders declare nothing but whose languages we know.
_CODE = re.compile(r"^[a-z]{2,3}([-_][a-z0-9]+)*$")


def script_of(char: str) -> str | None:
    """The script of one character among those listed, or None (digits, punctuation, other scripts)."""
    point = ord(char)
    for low, high, script in _SCRIPT_RANGES:
        if low <= point <= high:
            return script if script != "latin" or char.isalpha() else None
    return None


def query_script(query: str) -> str | None:
    """The script a query is written in, or None when it has no letters of a listed script.

    Kana anywhere makes Han-and-kana text Japanese. A non-Latin script wins over Latin when its weight (a
    Han character or Hangul syllable counts 3, a letter 1) is at least half the Latin letters', so "什么是
    transformer" is Chinese while "how do I say 你好" stays Latin."""
    counts: dict[str, int] = {}
    for char in query:
        script = script_of(char)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    if counts.get("kana"):
        counts["kana"] += counts.pop("han", 0)
    if counts.get("hangul"):
        counts["hangul"] += counts.pop("han", 0)
    weights = {s: n * (_SYLLABLE_WEIGHT if s in _SYLLABIC else 1) for s, n in counts.items()}
    latin = weights.pop("latin", 0)
    if weights:
        script, weight = max(weights.items(), key=lambda item: (item[1], item[0]))
        if 2 * weight >= latin:
            return script
    return "latin" if latin else None


def parse_languages(values: Iterable[str]) -> tuple[str, ...]:
    """Language codes as given (`en`, `zh-CN`, `*`), lower-cased; a region or variant is kept for display."""
    codes = []
    for value in values:
        code = value.strip().lower()
        if not code:
            continue
        if code not in _ANY_WORDS and not _CODE.match(code):
            raise ValueError(f"{value!r} is not an ISO 639-1 language code (e.g. en, zh) or * for any")
        codes.append(ANY_LANGUAGE if code in _ANY_WORDS else code)
    return tuple(codes)


@dataclass(frozen=True)
class ModelLanguages:
    """The languages a model reads; empty or `*` means any (nothing declared, nothing to guard)."""

    codes: tuple[str, ...] = ()
    source: str = "nothing declared"

    @property
    def any(self) -> bool:
        return (
            not self.codes
            or ANY_LANGUAGE in self.codes
            or any(_base(c) not in LANGUAGE_SCRIPTS for c in self.codes)
        )

    def reads(self, script: str | None) -> bool:
        if script is None or self.any:
            return True
        return any(script in LANGUAGE_SCRIPTS[_base(code)] for code in self.codes)

    def describe(self) -> str:
        return ", ".join(self.codes) if self.codes else ANY_LANGUAGE


def _base(code: str) -> str:
    return re.split(r"[-_]", code, maxsplit=1)[0]


def model_file(location: str, filename: str) -> Path | None:
    """A file of a model folder, or of a hub id's cached snapshot (never downloaded); None when absent."""
    folder = Path(location)
    if folder.is_dir():
        path = folder / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(location, filename)
    except Exception:  # not a valid hub id, or no hub library: nothing declared
        return None
    return Path(cached) if isinstance(cached, str) else None


def read_json(path: Path | None) -> Any:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def card_languages(card: str) -> tuple[str, ...]:
    """The `language:` of a model card's YAML front matter: `en`, `[en, zh]` or a block list."""
    lines = card.splitlines()
    if not lines or lines[0].strip() != "---":
        return ()
    values: list[str] = []
    in_list = False
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if in_list:
            item = re.match(r"^\s*-\s*(\S+)", line)
            if item:
                values.append(item.group(1).strip("'\""))
                continue
            in_list = False
        key = re.match(r"^language\s*:\s*(.*)$", line)
        if key:
            value = key.group(1).strip()
            if not value:
                in_list = True
            else:
                values.extend(v.strip().strip("'\"") for v in value.strip("[]").split(","))
    try:
        return parse_languages(values)
    except ValueError:
        return ()  # a card with names instead of codes declares nothing we can use


def model_languages(name: str, location: str, setting: Iterable[str] | None) -> ModelLanguages:
    """The setting when given, else what the folder declares (the shipped reranker's card says `en`), else
    any language."""
    if setting is not None:
        return ModelLanguages(parse_languages(setting), "setting")
    card = model_file(location, "README.md")
    if card is not None:
        try:
            codes = card_languages(card.read_text(encoding="utf-8"))
        except OSError:
            codes = ()
        if codes:
            return ModelLanguages(codes, "model card")
    declared = read_json(model_file(location, "hybrid_rerank.json"))
    if isinstance(declared, dict) and isinstance(declared.get("languages"), list):
        return ModelLanguages(parse_languages(str(v) for v in declared["languages"]), "hybrid_rerank.json")
    return ModelLanguages()


@dataclass(frozen=True)
class LanguagePlan:
    """What the pipeline does with one query: `language` is the script's label (None: no letters)."""

    language: str | None
    dense_note: str | None = None  # set when the bi-encoder does not read it: BM25 alone
    rerank_note: str | None = None  # set when the reranker does not read it: first-stage order kept

    @property
    def dense(self) -> bool:
        return self.dense_note is None

    @property
    def rerank(self) -> bool:
        return self.rerank_note is None

    @property
    def note(self) -> str | None:
        """What the guard changed, for people; None when the models read the query."""
        return "; ".join(n for n in (self.dense_note, self.rerank_note) if n) or None


@dataclass(frozen=True)
class LanguageGuard:
    embedding: ModelLanguages
    rerank: ModelLanguages

    def plan(self, query: str) -> LanguagePlan:
        script = query_script(query)
        label = SCRIPT_LABELS[script] if script is not None else None
        dense_note = rerank_note = None
        if not self.embedding.reads(script):
            dense_note = f"the bi-encoder reads {self.embedding.describe()}, not {label}: BM25 alone"
        if not self.rerank.reads(script):
            rerank_note = f"the reranker reads {self.rerank.describe()}, not {label}: not reranked"
        return LanguagePlan(label, dense_note, rerank_note)
