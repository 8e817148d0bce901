"""The admin as people use it: headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package) against the example project served by real server processes
and a real ZooKeeper.

The screenshots these tests take are the ones in ``docs/images/`` (and the README).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_site import ADMIN_PASSWORD, ADMIN_USER, LiveSite, fetch_json

from ..conftest import IN_CI, wait_until

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"
CHROMIUM = os.environ.get("ZKFLAGS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container
    "--disable-gpu",
    "--disable-background-networking",  # no calls home on a closed network
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> Any:
    """Playwright and Chromium, or a skip (a failure under CI)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright's Python package (pip install -e .[test])"
    if missing is None and not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        missing = "Debian's chromium (apt-get install chromium; make setup does it)"
    if missing is not None:
        if IN_CI:
            pytest.fail(f"browser tests need {missing}", pytrace=False)
        pytest.skip(f"browser tests need {missing}")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = require_browser()
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(zk_server: Any, tmp_path_factory: Any) -> Iterator[LiveSite]:
    live = LiveSite(zk_server.hosts, tmp_path_factory.mktemp("live-site")).setup()
    try:
        live.serve()
        live.serve()
        yield live
    finally:
        live.stop()


def logged_in(browser: Any, server_url: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{server_url}/admin/login/?next=/admin/django_zkflags/flag/")
    page.fill("#id_username", ADMIN_USER)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/django_zkflags/flag/")
    return page


def screenshot(page: Any, name: str) -> Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    page.screenshot(path=str(path), full_page=True)
    return path


def served(server_url: str, name: str) -> Any:
    """What that server process serves for flag ``name`` (its /status/ and home page)."""
    return fetch_json(f"{server_url}/status/")


def banner_on(page: Any, server_url: str) -> bool:
    page.goto(f"{server_url}/")
    return page.locator("#banner").count() == 1


def test_log_in_and_see_the_flags(browser, site):
    page = logged_in(browser, site.servers[0].url)
    names = page.locator("#result_list tbody th a").all_inner_texts()
    assert {"banner", "beta-page", "welcome-text"} <= set(names)
    path = screenshot(page, "flag-list.png")
    assert path.stat().st_size > 10_000
    page.context.close()


def test_a_save_in_one_server_is_served_by_the_other(browser, site):
    editor = logged_in(browser, site.servers[0].url)
    visitor = browser.new_context().new_page()
    assert banner_on(visitor, site.servers[1].url)
    editor.click("text=banner")
    editor.select_option("#id_everyone", "False")
    editor.click("input[name=_save]")
    editor.wait_for_url("**/admin/django_zkflags/flag/")
    # The other process, with its own watch, serves the change.
    wait_until(lambda: not banner_on(visitor, site.servers[1].url), timeout=15, interval=0.1)
    assert visitor.locator("#no-banner").count() == 1
    # Put it back for the other tests.
    editor.click("text=banner")
    editor.select_option("#id_everyone", "True")
    editor.click("input[name=_save]")
    wait_until(lambda: banner_on(visitor, site.servers[1].url), timeout=15, interval=0.1)
    editor.context.close()
    visitor.context.close()
