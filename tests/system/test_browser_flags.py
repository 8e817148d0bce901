"""The README's "Flags in the browser" snippet, run as written in headless Chromium against
the example project (a real server process and a real ZooKeeper): it reads
``/zkflags/flags.json`` with the visitor's cookies, sees the public flags and their values
and nothing else, and an anonymous visitor keeps its percentage bucket from page to page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_site import LiveSite, fetch_json

from ..conftest import wait_until
from .test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    """The JavaScript of the README's snippet (the ``html`` block after its marker)."""
    text = README.read_text()
    section = text[text.index("### Flags in the browser") :]
    block = re.search(r"```html\n<script>\n(.*?)</script>\n```", section, re.S)
    assert block is not None, "the README's snippet is gone"
    return block.group(1)


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
    live = LiveSite(zk_server.hosts, tmp_path_factory.mktemp("browser-flags")).setup()
    try:
        live.manage("zkflags", "set", "dark-mode", "--on", "--public", "--value", '"night"')
        live.manage("zkflags", "set", "split", "--rules", "--percent", "50", "--public")
        live.manage("zkflags", "set", "secret-sale", "--on", "--value", '{"discount": 30}')
        live.serve()
        yield live
    finally:
        live.stop()


def served(url: str) -> dict[str, Any]:
    return fetch_json(f"{url}/zkflags/flags.json")  # type: ignore[no-any-return]


def test_the_readme_snippet_reads_the_public_flags(browser, site):
    url = site.servers[0].url
    wait_until(lambda: "split" in served(url)["flags"], timeout=30, interval=0.1)
    snippet = readme_snippet()
    answers = set()
    for _visitor in range(12):
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/")
        page.add_script_tag(content=snippet)
        assert page.evaluate("flagIsActive('dark-mode')") is True
        assert page.evaluate("flagValue('dark-mode', 'day')") == "night"
        assert page.evaluate("flagIsActive('secret-sale')") is False
        assert page.evaluate("flagValue('secret-sale', null)") is None
        assert page.evaluate("flagIsActive('no-such-flag')") is False
        page.wait_for_function("document.body.classList.contains('dark')")
        raw = page.evaluate("zkflags.then((data) => JSON.stringify(data))")
        assert "secret" not in raw and "discount" not in raw
        split = page.evaluate("flagIsActive('split')")
        answers.add(split)
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        assert cookies["zkflags_uid"]["httpOnly"]  # the anonymous visitor's bucket
        # The next page load of the same visitor: the same answer, the same cookie.
        page.reload()
        page.add_script_tag(content=snippet)
        assert page.evaluate("flagIsActive('split')") is split
        again = {cookie["name"]: cookie["value"] for cookie in context.cookies()}
        assert again["zkflags_uid"] == cookies["zkflags_uid"]["value"]
        context.close()
    assert answers == {True, False}, json.dumps(sorted(answers))
