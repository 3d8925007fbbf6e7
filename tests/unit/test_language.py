"""The language guard's pure parts: the script detector on hand-made queries and on the shared datasets' real
ones, the languages a model declares (card front matter, hybrid_rerank.json, settings), and the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.language import (
    LanguageGuard,
    ModelLanguages,
    card_languages,
    model_languages,
    parse_languages,
    query_script,
)
from hybrid_rerank.workers.runtime.models import resolve_model
from tests.conftest import shared_dataset


@pytest.mark.parametrize(
    ("query", "script"),
    [
        ("what causes the phases of the moon", "latin"),
        ("Vitamin D and hip fractures in women older than 65", "latin"),
        ("Pourquoi le ciel est-il bleu ?", "latin"),
        ("Tại sao bầu trời có màu xanh", "latin"),  # Vietnamese: Latin Extended Additional
        ("TNF-α inhibits β-cell apoptosis", "latin"),  # Greek letters in an English query stay English
        ("战国无双3是由哪两个公司合作开发的？", "han"),
        ("什么是transformer", "han"),  # Chinese with an English word: weighted, Chinese leads
        ("GPT-4 是什么", "han"),
        ("how do I say 你好 in English", "latin"),  # two Chinese characters in an English sentence
        ("東京タワーの高さは何メートルですか", "kana"),  # kanji with kana is Japanese
        ("서울의 인구는 얼마입니까", "hangul"),
        ("Почему небо голубое", "cyrillic"),
        ("Чому небо блакитне", "cyrillic"),
        ("لماذا السماء زرقاء", "arabic"),
        ("Γιατί ο ουρανός είναι μπλε", "greek"),
        ("למה השמיים כחולים", "hebrew"),
        ("आसमान नीला क्यों है", "devanagari"),
        ("ทำไมท้องฟ้าเป็นสีฟ้า", "thai"),
        ("", None),
        ("12345 ?! 3.14", None),  # no letters: nothing to guard
        ("Երկինքը կապույտ է", None),  # Armenian is not a script the guard tells apart: let it through
    ],
)
def test_the_script_of_hand_made_queries(query: str, script: str | None) -> None:
    assert query_script(query) == script


def test_every_scifact_query_reads_as_latin_so_the_guard_never_fires_on_it() -> None:
    """The English benchmark must never lose its bi-encoder or reranker to the guard."""
    queries = shared_dataset("scifact") / "queries.jsonl"
    texts = [json.loads(line)["text"] for line in queries.read_text(encoding="utf-8").splitlines()]
    english = LanguageGuard(ModelLanguages(("en",)), ModelLanguages(("en",)))
    assert len(texts) > 1000
    assert {query_script(text) for text in texts} == {"latin"}
    assert all(english.plan(text).note is None for text in texts)


def test_every_non_empty_cmrc_query_reads_as_chinese() -> None:
    queries = shared_dataset("cmrc2018") / "queries.jsonl"
    texts = [json.loads(line)["text"] for line in queries.read_text(encoding="utf-8").splitlines()]
    assert {query_script(text) for text in texts if text.strip()} == {"han"}


@pytest.mark.parametrize(
    ("card", "codes"),
    [
        ("---\nlanguage: en\nlicense: mit\n---\n# model", ("en",)),
        ("---\nlicense: mit\nlanguage:\n- en\n- zh\ntags:\n- x\n---\n", ("en", "zh")),
        ("---\nlanguage:\n  - 'de'\n  - \"fr\"\n---\n", ("de", "fr")),
        ("---\nlanguage: [en, zh-CN]\n---\n", ("en", "zh-cn")),
        ("---\nlanguage: multilingual\n---\n", ("*",)),
        ("---\nlanguage: English\n---\n", ()),  # a name, not a code: nothing usable declared
        ("# no front matter\nlanguage: en\n", ()),
        ("---\nlicense: mit\n---\nlanguage: en\n", ()),  # after the front matter: body text
    ],
)
def test_card_front_matter_languages(card: str, codes: tuple[str, ...]) -> None:
    assert card_languages(card) == codes


def test_parse_languages_refuses_what_is_not_a_code() -> None:
    assert parse_languages([" EN", "zh_TW", "", "any"]) == ("en", "zh_tw", "*")
    with pytest.raises(ValueError, match="'english' is not an ISO 639-1"):
        parse_languages(["english"])


def test_what_a_model_reads_by_script() -> None:
    english = ModelLanguages(("en",))
    assert english.reads("latin") and not english.reads("han") and not english.reads("cyrillic")
    assert english.reads(None)  # no letters: nothing to guard
    assert ModelLanguages(("zh",)).reads("han") and not ModelLanguages(("zh",)).reads("latin")
    assert ModelLanguages(("ja",)).reads("han") and ModelLanguages(("ja",)).reads("kana")
    assert ModelLanguages(("uk",)).reads("cyrillic")  # a Cyrillic query is read by any Cyrillic-script model
    assert ModelLanguages(("sr",)).reads("latin") and ModelLanguages(("sr",)).reads("cyrillic")
    assert ModelLanguages(("en", "zh-cn")).reads("han")
    for unknown in (ModelLanguages(), ModelLanguages(("*",)), ModelLanguages(("en", "hy"))):
        assert unknown.any and unknown.reads("han")  # nothing declared, or a code we cannot place: pass


def test_models_declare_their_languages(tmp_path: Path) -> None:
    minilm = resolve_model("all-MiniLM-L6-v2")
    assert model_languages("all-MiniLM-L6-v2", minilm.location, None) == ModelLanguages(("en",), "model card")
    shipped = resolve_model("scifact-minilm-l6-reranker-int8")
    assert model_languages(shipped.name, shipped.location, None) == ModelLanguages(("en",), "model card")
    assert model_languages("m", minilm.location, ["zh", "en"]) == ModelLanguages(("zh", "en"), "setting")
    (tmp_path / "hybrid_rerank.json").write_text(json.dumps({"languages": ["zh"]}))
    assert model_languages("ours", str(tmp_path), None) == ModelLanguages(("zh",), "hybrid_rerank.json")
    (tmp_path / "README.md").write_text("---\nlanguage:\n- ko\n---\n")
    assert model_languages("ours", str(tmp_path), None).codes == ("ko",)  # the card comes first
    assert model_languages("hub/never-cached", "hub/never-cached", None) == ModelLanguages()
    assert model_languages("empty", str(tmp_path / "missing"), None).any


def test_the_plan_says_what_the_guard_changed() -> None:
    guard = LanguageGuard(ModelLanguages(("en",)), ModelLanguages(("en", "zh")))
    chinese = guard.plan("战国无双3是由哪两个公司合作开发的？")
    assert (chinese.language, chinese.dense, chinese.rerank) == ("zh", False, True)
    assert chinese.note == "the bi-encoder reads en, not zh: BM25 alone"
    russian = LanguageGuard(ModelLanguages(("en",)), ModelLanguages(("en",))).plan("Почему небо голубое")
    assert (russian.language, russian.dense, russian.rerank) == ("cyrillic", False, False)
    assert russian.rerank_note == "the reranker reads en, not cyrillic: not reranked"
    assert russian.note == (
        "the bi-encoder reads en, not cyrillic: BM25 alone; the reranker reads en, not cyrillic: not reranked"
    )
    english = guard.plan("why is the sky blue")
    assert (english.language, english.dense, english.rerank, english.note) == ("latin", True, True, None)
