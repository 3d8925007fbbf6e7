from hybrid_rerank.connector.text import tokenize


def test_english_is_lowercased_stemmed_and_stopped() -> None:
    assert tokenize("The Running of the Studies, in 2020!") == ["run", "studi", "2020"]


def test_chinese_runs_become_overlapping_bigrams() -> None:
    assert tokenize("北京大学") == ["北京", "京大", "大学"]


def test_a_lone_ideograph_stays_a_unigram_and_scripts_mix() -> None:
    assert tokenize("猫 likes 牛奶 (milk)") == ["猫", "like", "牛奶", "milk"]


def test_full_width_forms_are_normalised() -> None:
    assert tokenize("ＡＢＣ１２３") == ["abc123"]


def test_punctuation_only_gives_no_terms() -> None:
    assert tokenize("?!…，。") == []
