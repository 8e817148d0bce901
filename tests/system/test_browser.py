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
from tests.support.tcpproxy import TcpProxy

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
    context = browser.new_context(viewport={"width": 1440, "height": 900})
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


@pytest.fixture(scope="module")
def proxy(zk_server: Any) -> Iterator[TcpProxy]:
    """Between the site's processes and ZooKeeper: block it to play "ZooKeeper stopped"
    without stopping the server other tests share."""
    with TcpProxy("127.0.0.1", zk_server.port).start() as tcp:
        yield tcp


def test_a_quick_toggle_is_served_by_the_other_process(browser, site):
    editor = logged_in(browser, site.servers[0].url)
    visitor = browser.new_context().new_page()
    assert banner_on(visitor, site.servers[1].url)
    row = editor.locator("#result_list tbody tr", has_text="banner")
    row.locator("button[name=everyone][value=off]").click()
    editor.wait_for_selector("text=turned off for everyone")
    wait_until(lambda: not banner_on(visitor, site.servers[1].url), timeout=15, interval=0.1)
    row = editor.locator("#result_list tbody tr", has_text="banner")
    row.locator("button[name=everyone][value=on]").click()
    editor.wait_for_selector("text=turned on for everyone")
    wait_until(lambda: banner_on(visitor, site.servers[1].url), timeout=15, interval=0.1)
    editor.context.close()
    visitor.context.close()


def open_flag(page: Any, server_url: str, name: str) -> None:
    page.goto(f"{server_url}/admin/django_zkflags/flag/")
    page.click(f"#result_list >> text={name}")
    page.wait_for_selector("#id_note")


def test_two_editors_the_second_sees_the_conflict_and_keeps_what_they_typed(browser, site):
    first = logged_in(browser, site.servers[0].url)
    second = logged_in(browser, site.servers[1].url)
    open_flag(first, site.servers[0].url, "beta-page")
    open_flag(second, site.servers[1].url, "beta-page")
    first.fill("#id_note", "edited by the first editor")
    first.click("input[name=_save]")
    first.wait_for_url("**/admin/django_zkflags/flag/")
    second.fill("#id_note", "typed by the second editor")
    second.click("input[name=_save]")
    second.wait_for_selector(".errornote, .errorlist")
    page_text = second.inner_text("#content")
    assert "changed" in page_text.lower()
    assert second.input_value("#id_note") == "typed by the second editor"  # nothing lost
    assert "edited by the first editor" in page_text  # what ZooKeeper holds now, beside it
    screenshot(second, "conflict.png")
    first.context.close()
    second.context.close()


def test_history_shows_the_diff_and_restores_an_earlier_version(browser, site):
    page = logged_in(browser, site.servers[0].url)
    open_flag(page, site.servers[0].url, "welcome-text")
    page.fill("#id_value", '"Hello from the browser test."')
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/django_zkflags/flag/")
    open_flag(page, site.servers[0].url, "welcome-text")
    history = page.inner_text("#zkflags-history-table")
    assert "Hello from the browser test." in history and "→" in history
    screenshot(page, "flag-history.png")
    # Restore the version the demo created (0): a new version, audited.
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator('tr.zkflags-history[data-version="0"] button').first.click()
    page.wait_for_load_state()
    visitor = browser.new_context().new_page()
    wait_until(
        lambda: (
            (visitor.goto(f"{site.servers[1].url}/"), visitor.inner_text("#welcome"))[1]
            == "Hello from ZooKeeper."
        ),
        timeout=15,
        interval=0.1,
    )
    visitor.context.close()
    page.context.close()


def test_zookeeper_gone_mid_edit_keeps_what_was_typed(browser, tmp_path_factory, proxy):
    live = LiveSite(
        proxy.hosts, tmp_path_factory.mktemp("live-site-cut"), ADMIN_WRITE_TIMEOUT="3"
    ).setup()
    try:
        server = live.serve()
        page = logged_in(browser, server.url)
        open_flag(page, server.url, "beta-page")
        page.fill("#id_note", "typed while ZooKeeper went away")
        proxy.block()
        try:
            page.click("input[name=_save]")
            page.wait_for_selector(".errornote, .errorlist", timeout=30_000)
            assert page.input_value("#id_note") == "typed while ZooKeeper went away"
            assert "ZooKeeper" in page.inner_text("#content")
            screenshot(page, "zookeeper-away.png")
        finally:
            proxy.unblock()
        page.context.close()
    finally:
        live.stop()


def test_the_fleet_page_shows_the_processes_and_loses_a_killed_one(
    browser, zk_server, tmp_path_factory
):
    live = LiveSite(
        zk_server.hosts, tmp_path_factory.mktemp("live-site-fleet"), ZKFLAGS_SESSION_TIMEOUT="2"
    ).setup()
    try:
        first, second = live.serve(), live.serve()
        page = logged_in(browser, first.url)
        fleet_url = f"{first.url}/admin/django_zkflags/flag/fleet/"

        def processes() -> int:
            page.goto(fleet_url)
            return page.locator("tr.zkflags-fleet-member").count()

        wait_until(lambda: processes() == 2, timeout=30, interval=0.3)
        screenshot(page, "fleet.png")
        second.proc.kill()  # SIGKILL: its ephemeral znode goes with its session
        second.proc.wait(10)
        wait_until(lambda: processes() == 1, timeout=30, interval=0.3)
        page.context.close()
    finally:
        live.stop()
