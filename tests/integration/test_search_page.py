"""The search page in a real headless Chromium against a real `hybrid-rerank serve` (embedded backend, the
cross-encoder in-process). The tiny marker cross-encoder scores only the document holding the marker word, so
the reranked column must differ from the first stage in a way the test knows in advance."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.integration.browser import headless_chromium, require_browser
from tests.service_process import CLI, REPO, ServiceProcess, start_service
from tests.tiny_models import build_tiny_cross_encoder

pytestmark = pytest.mark.integration

PORT = 9500
API_KEY = "page-test-key"
MARKER = "football"  # the tiny cross-encoder's marker word: only MARKER_DOC holds it
MARKER_DOC = "night-match"
QUERY = "moon phases"
XSS_TITLE = '<img src=x onerror="window.pwned=1"><b>Stars</b> & <i>moon</i>'
XSS_TEXT = "Stars and the moon at night <script>window.pwned=2</script> seen from a hill."
ARTIFACT = REPO / ".work" / "artifacts" / "search-page.png"
# Variables that would point the service at another backend, reranker, key or index.
FOREIGN_SETTINGS = (
    "OPENSEARCH_URL",
    "REDIS_URL",
    "API_KEY",
    "INDEX_NAME",
    "RERANK_INTERPOLATION",
    "RERANK_DEPTH",
    "RECALL_DEPTH",
    "TOP_K",
    "CORS_ORIGINS",
)


def doc(doc_id: str, title: str, text: str, topic: str, year: int) -> dict[str, Any]:
    return {"id": doc_id, "title": title, "text": text, "metadata": {"topic": topic, "year": year}}


CORPUS = [
    doc(
        "moon-phases",
        "Moon phases",
        "The moon shows phases as sunlight hits it from changing angles.",
        "astronomy",
        2019,
    ),
    doc(
        "moon-orbit",
        "Moon orbit",
        "The moon orbits the earth in about a month and its phases follow.",
        "astronomy",
        2020,
    ),
    doc(
        "eclipse",
        "Lunar eclipse",
        "A lunar eclipse happens when the earth's shadow falls on the full moon.",
        "astronomy",
        2021,
    ),
    doc(
        "tides",
        "Tides",
        "The moon's gravity pulls the oceans and makes the tides rise and fall.",
        "astronomy",
        2018,
    ),
    doc(
        MARKER_DOC,
        "Night match",
        f"The {MARKER} team played a {MARKER} game under the lights.",
        "sports",
        2022,
    ),
    doc(
        "steak",
        "Resting steak",
        "Rest a grilled steak for five minutes so the juices settle.",
        "cooking",
        2020,
    ),
    doc("bread", "Bread dough", "Bread dough rises as yeast ferments sugar into gas.", "cooking", 2021),
    doc(
        "wal",
        "Write-ahead log",
        "Databases write a log before changing data so a crash loses nothing.",
        "computing",
        2019,
    ),
    doc("xss", XSS_TITLE, XSS_TEXT, "misc", 2023),
]
ASTRONOMY = {d["id"] for d in CORPUS if d["metadata"]["topic"] == "astronomy"}

# One read of a column: what the page shows for each hit, from its data attributes and text.
READ_LIST = """
return [...document.querySelectorAll(`[data-testid="${arguments[0]}"] > li[data-testid="hit"]`)].map(li => ({
  id: li.dataset.id,
  rank: Number(li.dataset.rank),
  fused_rank: Number(li.dataset.fusedRank),
  title: li.querySelector('[data-field="title"]').textContent,
  move: li.dataset.move || null,
  scores: Object.fromEntries([...li.querySelectorAll('.score')].map(s => [s.dataset.stage, s.dataset.score])),
}));
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    require_browser()  # before the minutes of setup, so a machine without the browser skips at once
    root = tmp_path_factory.mktemp("search-page")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in CORPUS), encoding="utf-8")
    model = root / "marker-ce"
    env = {"DATA_DIR": str(root / "data"), "RERANK_MODEL": str(model), "HF_HUB_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for name in FOREIGN_SETTINGS:
            patch.delenv(name, raising=False)
        # The CLI indexes (loading the bi-encoder) while this process builds the cross-encoder.
        indexing = subprocess.Popen(
            [str(CLI), "index", str(corpus)],
            env={**os.environ, **env},
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            build_tiny_cross_encoder(model, marker=MARKER)
            output, _ = indexing.communicate(timeout=600)
        finally:
            if indexing.poll() is None:
                indexing.kill()
        assert indexing.returncode == 0, output
        with start_service({**env, "API_KEY": API_KEY}, cwd=root, port=PORT) as running:
            yield running


@pytest.fixture(scope="module")
def browser(service: ServiceProcess) -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def open_page(driver: WebDriver, service: ServiceProcess, api_key: str | None = API_KEY) -> None:
    """The page fresh, with an empty sessionStorage; the API key typed in when given."""
    driver.get(f"{service.url}/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "idle"
    )
    if api_key is not None:
        by_testid(driver, "api-key").send_keys(api_key)


def by_testid(driver: WebDriver, testid: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def searches_done(driver: WebDriver) -> int:
    return int(by_testid(driver, "results").get_attribute("data-searches") or "0")


def wait_for_search(driver: WebDriver, before: int) -> str:
    """Wait for the search after `before` to finish; its state: 'done' or 'error'."""
    results = by_testid(driver, "results")
    WebDriverWait(driver, 120).until(
        lambda _: searches_done(driver) > before and results.get_attribute("data-state") != "loading"
    )
    return results.get_attribute("data-state") or ""


def search(driver: WebDriver, query: str, *, k: int = 10, filters: str = "", rerank: bool = True) -> str:
    """Fill the form as a person would and press Search; the finished search's state."""
    query_box = by_testid(driver, "query")
    query_box.clear()  # first, so changing k or the toggle below starts no search of its own
    Select(by_testid(driver, "k")).select_by_visible_text(str(k))
    toggle = by_testid(driver, "rerank")
    if toggle.is_selected() != rerank:
        driver.find_element(By.CSS_SELECTOR, "label.switch").click()
    assert toggle.is_selected() == rerank
    filter_box = by_testid(driver, "filters")
    filter_box.clear()
    if filters:
        filter_box.send_keys(filters)
    query_box.send_keys(query)
    before = searches_done(driver)
    by_testid(driver, "submit").click()
    return wait_for_search(driver, before)


def read_list(driver: WebDriver, testid: str) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = driver.execute_script(READ_LIST, testid)
    return hits


def timings(driver: WebDriver) -> dict[str, float]:
    rows = by_testid(driver, "timings").find_elements(By.CSS_SELECTOR, '[data-testid="timing"]')
    shown = {}
    for row in rows:
        assert row.text.endswith("ms"), row.text
        shown[row.get_attribute("data-stage") or ""] = float(row.get_attribute("data-ms") or "nan")
    return shown


def save_screenshot(driver: WebDriver, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    print(f"search page screenshot: {path}")


def test_the_reranked_column_shows_the_marker_document_first_beside_the_first_stage(
    browser: WebDriver, service: ServiceProcess
) -> None:
    started = time.perf_counter()
    open_page(browser, service)
    assert search(browser, QUERY) == "done", by_testid(browser, "error").text
    first_stage = read_list(browser, "first-stage-list")
    reranked = read_list(browser, "reranked-list")
    assert {h["id"] for h in first_stage} == {d["id"] for d in CORPUS}  # k=10 holds all nine documents
    assert [h["rank"] for h in first_stage] == list(range(1, len(CORPUS) + 1))

    marker_fused = next(h["rank"] for h in first_stage if h["id"] == MARKER_DOC)
    assert marker_fused > 1, "the first stage already put the marker document first: nothing to rerank"
    assert reranked[0]["id"] == MARKER_DOC
    assert reranked[0]["fused_rank"] == marker_fused
    assert reranked[0]["move"] == f"▲{marker_fused - 1}"  # how far the cross-encoder lifted it
    assert float(reranked[0]["scores"]["rerank"]) > 1.0  # the marker's score; the others score 0
    assert float(reranked[1]["scores"]["rerank"]) == pytest.approx(0.0, abs=1e-4)
    # The first column keeps the fused order: its fused ranks read 1, 2, 3, ...
    assert [h["fused_rank"] for h in first_stage] == [h["rank"] for h in first_stage]
    assert not by_testid(browser, "rerank-banner").is_displayed()
    assert not by_testid(browser, "error").is_displayed()

    shown = timings(browser)
    for stage in ("embed_query", "recall", "fusion", "rerank", "total"):
        assert stage in shown, f"no {stage} timing on the page: {shown}"
        assert shown[stage] >= 0.0
    assert shown["total"] >= shown["rerank"]  # total spans every stage
    console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    script_errors = [entry for entry in console if entry.get("source") == "javascript"]
    assert script_errors == []
    save_screenshot(browser, ARTIFACT)
    print(f"search page test: {time.perf_counter() - started:.1f} s in the browser")


def test_a_filter_restricts_both_columns(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service)
    assert search(browser, QUERY, filters="topic=astronomy") == "done", by_testid(browser, "error").text
    first_stage = read_list(browser, "first-stage-list")
    reranked = read_list(browser, "reranked-list")
    assert {h["id"] for h in first_stage} == ASTRONOMY
    assert {h["id"] for h in reranked} == ASTRONOMY  # the marker document (sports) is filtered out
    # Two filter lines: both apply (astronomy and a year range).
    assert search(browser, QUERY, filters="topic=astronomy\nyear=2020..2021") == "done"
    expected = {d["id"] for d in CORPUS if d["id"] in ASTRONOMY and 2020 <= d["metadata"]["year"] <= 2021}
    assert {h["id"] for h in read_list(browser, "first-stage-list")} == expected
    assert {h["id"] for h in read_list(browser, "reranked-list")} == expected


def test_with_rerank_off_the_banner_gives_the_reason(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service)
    assert search(browser, QUERY, rerank=False) == "done"
    banner = by_testid(browser, "rerank-banner")
    assert banner.is_displayed()
    assert "Not reranked" in banner.text
    assert "turned off" in by_testid(browser, "rerank-note").text  # the service's rerank_note
    first_stage = read_list(browser, "first-stage-list")
    final = read_list(browser, "reranked-list")
    assert [h["id"] for h in final] == [h["id"] for h in first_stage]
    assert final[0]["id"] != MARKER_DOC
    assert "rerank" not in timings(browser)
    # Turned back on, the banner goes away.
    assert search(browser, QUERY, rerank=True) == "done"
    assert not banner.is_displayed()


def test_an_api_error_is_shown_with_its_field(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service)
    assert search(browser, QUERY, filters="year=recent..old") == "error"
    error = by_testid(browser, "error")
    assert error.is_displayed()
    assert "422" in error.text and "needs numbers" in error.text
    assert error.get_attribute("data-field") == "filter_expressions[0]"
    assert by_testid(browser, "filters").get_attribute("aria-invalid") == "true"
    assert not browser.find_element(By.ID, "columns").is_displayed()  # no stale result under the error
    assert search(browser, QUERY) == "done"
    assert not error.is_displayed()
    assert by_testid(browser, "filters").get_attribute("aria-invalid") is None


def test_the_api_key_is_sent_and_kept_for_the_tab(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service, api_key=None)
    assert search(browser, QUERY) == "error"
    error = by_testid(browser, "error")
    assert "401" in error.text and error.get_attribute("data-field") == "authorization"
    by_testid(browser, "api-key").send_keys(API_KEY)
    before = searches_done(browser)
    by_testid(browser, "submit").click()
    assert wait_for_search(browser, before) == "done"
    # A reload keeps the key (sessionStorage) and the query (the address), and searches again with both.
    browser.refresh()
    assert wait_for_search(browser, 0) == "done"
    assert by_testid(browser, "api-key").get_attribute("value") == API_KEY
    assert by_testid(browser, "query").get_attribute("value") == QUERY
    assert read_list(browser, "reranked-list")[0]["id"] == MARKER_DOC


def test_document_text_is_shown_as_text_never_as_markup(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service)
    assert search(browser, QUERY) == "done"
    hit = browser.find_element(By.CSS_SELECTOR, '[data-testid="reranked-list"] li[data-id="xss"]')
    assert hit.find_element(By.CSS_SELECTOR, '[data-field="title"]').text == XSS_TITLE
    text = hit.find_element(By.CSS_SELECTOR, '[data-field="text"]').get_attribute("textContent")
    assert text == XSS_TEXT
    results = by_testid(browser, "results")
    assert results.find_elements(By.CSS_SELECTOR, "img, script, b, i") == []
    assert browser.execute_script("return window.pwned === undefined")


def test_pages_walk_the_same_ranked_list(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service)
    assert search(browser, QUERY, k=5) == "done"
    page_one = read_list(browser, "reranked-list")
    assert [h["rank"] for h in page_one] == [1, 2, 3, 4, 5]
    assert not by_testid(browser, "next-page").get_attribute("disabled")
    before = searches_done(browser)
    by_testid(browser, "next-page").click()
    assert wait_for_search(browser, before) == "done"
    page_two = read_list(browser, "reranked-list")
    assert [h["rank"] for h in page_two] == [6, 7, 8, 9]
    assert {h["id"] for h in page_one} | {h["id"] for h in page_two} == {d["id"] for d in CORPUS}
    assert [h["rank"] for h in read_list(browser, "first-stage-list")] == [6, 7, 8, 9]
    assert by_testid(browser, "next-page").get_attribute("disabled")
    assert "page=2" in browser.current_url


def test_the_page_loads_nothing_from_elsewhere(browser: WebDriver, service: ServiceProcess) -> None:
    open_page(browser, service)
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".concat([...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href))"
    )
    assert sources, "the page loaded no resources at all"
    foreign = [s for s in sources if not (s.startswith(service.url) or s.startswith("data:"))]
    assert foreign == []
