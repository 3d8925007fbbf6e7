from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.settings import load_settings, redact_url


def test_defaults_mean_embedded_and_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENSEARCH_URL", "REDIS_URL", "RERANK_MODEL", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert not settings.uses_opensearch and not settings.uses_celery
    assert settings.embedding_model == "all-MiniLM-L6-v2"
    assert settings.data_dir == Path("data")
    assert settings.trust_remote_code is False


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:9200")
    monkeypatch.setenv("INDEX_NAME", "papers")
    monkeypatch.setenv("RECALL_DEPTH", "50")
    monkeypatch.setenv("FUSION", "minmax")
    monkeypatch.setenv("RERANK_MODEL", "none")
    settings = load_settings(_env_file=None)
    assert settings.uses_opensearch and settings.index_name == "papers"
    assert settings.recall_depth == 50 and settings.fusion == "minmax"
    assert settings.rerank_model is None


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INDEX_NAME", raising=False)
    env = tmp_path / ".env"
    env.write_text("INDEX_NAME=from-dotenv\n")
    assert load_settings(_env_file=env).index_name == "from-dotenv"


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_USERNAME", "admin")
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "hunter2")
    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@127.0.0.1:6379/0")
    settings = load_settings(_env_file=None)
    shown = repr(settings) + str(settings.describe())
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "redis://:***@127.0.0.1:6379/0" in shown
    assert settings.redis_url is not None and "s3cret" in settings.redis_url.get_secret_value()


def test_password_in_opensearch_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_URL", "https://admin:pw@localhost:9200")
    with pytest.raises(ConfigurationError, match="OPENSEARCH_PASSWORD") as info:
        load_settings(_env_file=None)
    assert "pw@" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FUSION", "borda", "FUSION"),
        ("RECALL_DEPTH", "0", "RECALL_DEPTH"),
        ("BM25_WEIGHT", "1.5", "BM25_WEIGHT"),
        ("RERANK_BACKEND", "tensorrt", "RERANK_BACKEND"),
    ],
)
def test_bad_values_give_a_readable_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(_env_file=None)


def test_rerank_depth_cannot_exceed_recall_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECALL_DEPTH", "20")
    monkeypatch.setenv("RERANK_DEPTH", "30")
    with pytest.raises(ConfigurationError, match="cannot exceed"):
        load_settings(_env_file=None)


def test_redact_url_leaves_password_free_urls_alone() -> None:
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact_url("redis://user:pw@h:1/2") == "redis://user:***@h:1/2"


def test_prompts_languages_and_the_guard_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "EMBEDDING_QUERY_PROMPT",
        "EMBEDDING_PASSAGE_PROMPT",
        "EMBEDDING_LANGUAGES",
        "RERANK_LANGUAGES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LANGUAGE_GUARD", raising=False)
    default = load_settings(_env_file=None)
    assert (default.embedding_query_prompt, default.embedding_passage_prompt) == (None, None)  # the folder's
    assert (default.embedding_languages, default.rerank_languages, default.language_guard) == (
        None,
        None,
        True,
    )
    monkeypatch.setenv("EMBEDDING_QUERY_PROMPT", "query: ")
    monkeypatch.setenv("EMBEDDING_PASSAGE_PROMPT", "")  # explicitly none, whatever the folder declares
    monkeypatch.setenv("EMBEDDING_LANGUAGES", " en , ZH-cn ")
    monkeypatch.setenv("RERANK_LANGUAGES", "*")
    monkeypatch.setenv("LANGUAGE_GUARD", "false")
    settings = load_settings(_env_file=None)
    assert (settings.embedding_query_prompt, settings.embedding_passage_prompt) == ("query: ", "")
    assert (settings.embedding_languages, settings.rerank_languages) == (["en", "zh-cn"], ["*"])
    assert settings.language_guard is False and settings.describe()["language_guard"] == "off"


def test_a_language_that_is_not_a_code_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANK_LANGUAGES", "en,Chinese")
    with pytest.raises(ConfigurationError, match=r"RERANK_LANGUAGES: .*'Chinese' is not an ISO 639-1"):
        load_settings(_env_file=None)
