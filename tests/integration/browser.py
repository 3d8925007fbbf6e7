"""Headless Chromium for the page tests: Debian's chromium driven by its own chromedriver (`scripts/browser`
installs both). The driver path is given, so Selenium never runs Selenium Manager, which would try to download
a driver; the flags keep the browser itself off the network too (no updates, no sync, no first-run calls)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # containers and CI run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers; Chromium would crash on big pages
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-device-scale-factor=1",
    "--lang=en-US",
)


def require_browser() -> None:
    """Skip (fail under CI) when the browser is not installed, saying how to install it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        message = (
            f"{', '.join(missing)} not found: run `bash scripts/browser` (apt-get chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def headless_chromium(window: tuple[int, int] = WINDOW) -> Iterator[WebDriver]:
    """A fresh headless Chromium with its own throwaway profile; quits it on exit."""
    require_browser()
    with tempfile.TemporaryDirectory(prefix="hybrid-rerank-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={window[0]},{window[1]}")
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
