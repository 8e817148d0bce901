"""Async views under a real ASGI server process: uvicorn serving tests/asgi/ (the async views
of tests/testapp/async_views.py behind session, auth and flag middleware, SQLite), its
runtime watching the session's real ZooKeeper. Flags are flipped in this process through
the ``zkflags`` fixture and the server is asked with urllib, logged in (session cookies
made by ``tests.asgi.prepare``) or anonymous.

No ``SynchronousOnlyOperation`` anywhere: every answer is checked, and at the end the
server's log (uvicorn's access lines, Django's 500 tracebacks) is read for a 500 or a
traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest

from django_zkflags.evaluation import ANONYMOUS_SALT
from django_zkflags.rules import bucket

from ..conftest import BOUND, IN_CI, wait_until

if not IN_CI:  # in the `test` extra: CI must have it, so there it fails instead
    pytest.importorskip("uvicorn", reason="pip install -e .[test]")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
COOKIE = "zkflags_uid"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 302 is an answer to check, not to follow


OPENER = urllib.request.build_opener(NoRedirect)


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        assert self.status == 200, (self.status, self.body[:2000])
        return json.loads(self.body)

    def cookie(self) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        for header in self.headers.get_all("Set-Cookie") or []:
            jar.load(header)
        return jar[COOKIE].value if COOKIE in jar else None


class AsgiSite:
    """uvicorn serving tests.asgi in a process of its own, its log in a file."""

    def __init__(self, directory: Path, zk_url: str) -> None:
        self.directory = directory
        self.env = dict(os.environ)
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env.update(
            {
                "ASGI_TEST_DATABASE": str(directory / "site.sqlite3"),
                "ZKFLAGS_URL": zk_url,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.log = directory / "uvicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.answers: list[Answer] = []

    def prepare(self) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "tests.asgi.prepare"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tests.asgi.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",  # the kernel picks a free port; uvicorn logs it
                    "--lifespan",
                    "off",  # Django has no lifespan support: no warning in the log
                ],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def listening() -> int | None:
            assert self.proc is not None and self.proc.poll() is None, self.output()
            match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.output())
            return int(match.group(1)) if match else None

        self.port = wait_until(listening, 60, interval=0.05, what="uvicorn listening")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(BOUND)

    def get(
        self, path: str, session: str | None = None, cookie: str | None = None, **params: str
    ) -> Answer:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        cookies = []
        if session:
            cookies.append(f"sessionid={session}")
        if cookie:
            cookies.append(f"{COOKIE}={cookie}")
        request = urllib.request.Request(
            url, headers={"Cookie": "; ".join(cookies)} if cookies else {}
        )
        try:
            with OPENER.open(request, timeout=BOUND) as response:
                answer = Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:  # 3xx (not followed), 4xx, 5xx
            answer = Answer(error.code, error.headers, error.read())
        self.answers.append(answer)
        assert b"SynchronousOnlyOperation" not in answer.body
        assert answer.status != 500, answer.body[:2000]
        return answer

    def flags(self, path: str, names: str, session: str | None = None) -> dict[str, bool]:
        return self.get(path, session, names=names).json()["flags"]

    def wait_flags(
        self, path: str, names: str, expected: dict[str, bool], session: str | None = None
    ) -> None:
        """Until the server answers ``expected`` (it follows ZooKeeper in milliseconds)."""
        wait_until(
            lambda: self.flags(path, names, session) == expected,
            BOUND,
            interval=0.02,
            what=f"{path}?names={names} answering {expected}",
        )


@pytest.fixture
def site(zkflags: Any, tmp_path: Path) -> Iterator[tuple[AsgiSite, dict[str, Any]]]:
    the_site = AsgiSite(tmp_path, zkflags.url)
    data = the_site.prepare()
    the_site.start()
    try:
        yield the_site, data
        the_site.stop()
        log = the_site.output()
        assert "SynchronousOnlyOperation" not in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]
        assert not re.search(r'" 500\b', log), log[-4000:]
    finally:
        the_site.stop()


def cookie_id(value: str) -> str:
    """The anonymous id inside a signed cookie value (raises if the signature is bad)."""
    request = HttpRequest()
    request.COOKIES[COOKIE] = value
    return request.get_signed_cookie(COOKIE, salt=ANONYMOUS_SALT)


def split_name(prefix: str, inside: int, outside: int) -> str:
    """A flag name whose 50 % holds user id ``inside`` and not ``outside``."""
    return next(
        name
        for name in (f"{prefix}-{i}" for i in range(1000))
        if bucket(name, inside) < 5000 <= bucket(name, outside)
    )


def test_async_views_under_uvicorn_follow_zookeeper(site, zkflags):
    server, data = site
    alice, bob = data["people"]["alice"], data["people"]["bob"]
    a, b = alice["session"], bob["session"]
    pct = split_name("pct", alice["id"], bob["id"])

    # Group rules: the group ids come from the async ORM.
    zkflags.write("grp", groups=[data["beta"]])
    zkflags.write("grp2", groups=[data["beta"]])
    zkflags.write(pct, percent=50)
    names = f"grp,grp2,{pct}"
    server.wait_flags("/async/checks/", names, {"grp": True, "grp2": True, pct: True}, a)
    assert server.flags("/async/checks/", names, b) == {"grp": False, "grp2": False, pct: False}
    assert server.get("/async/checks/", a, names="grp").json()["user"] == "alice"
    assert server.flags("/async/for-user/", "grp,grp2", a) == {"grp": True, "grp2": True}
    assert server.flags("/async/for-user/", "grp,grp2", b) == {"grp": False, "grp2": False}
    assert server.get("/async/template/", a, first="grp", second="grp2").body == b"on on"
    assert server.get("/async/template/", b, first="grp", second="grp2").body == b"off off"
    # The sync check after await request.auser() (issue 11's failure), on a percentage.
    assert server.flags("/async/sync-after-auser/", pct, a) == {pct: True}
    assert server.flags("/async/sync-after-auser/", pct, b) == {pct: False}

    # Flipped in ZooKeeper: the group loses, bob is named; the percentage goes to 100 %.
    zkflags.write("grp", groups=[], users=[bob["id"]])
    zkflags.write(pct, percent=100)
    server.wait_flags("/async/checks/", f"grp,{pct}", {"grp": True, pct: True}, b)
    assert server.flags("/async/checks/", f"grp,{pct}", a) == {"grp": False, pct: True}
    assert server.flags("/async/sync-after-auser/", pct, b) == {pct: True}


def test_anonymous_visitors_under_uvicorn(site, zkflags):
    server, _ = site
    zkflags.write("anon", percent=50)
    # Wait on a sentinel written after it: once the server has it, it has "anon" too.
    zkflags.write("sentinel", everyone=True)
    server.wait_flags("/async/checks/", "sentinel", {"sentinel": True})
    for _ in range(12):
        first = server.get("/async/checks/", names="anon")
        cookie = first.cookie()
        assert cookie is not None, "no anonymous cookie on an async response"
        expected = bucket("anon", cookie_id(cookie)) < 5000
        assert first.json()["flags"] == {"anon": expected}
        again = server.get("/async/checks/", cookie=cookie, names="anon")
        assert again.cookie() is None  # read back, not minted again
        assert again.json()["flags"] == {"anon": expected}
    zkflags.write("anon", percent=0)
    server.wait_flags("/async/checks/", "anon", {"anon": False})


def test_guards_on_async_views_under_uvicorn(site, zkflags):
    server, data = site
    a, b = data["people"]["alice"]["session"], data["people"]["bob"]["session"]
    guarded = ("/async/guarded/", "/async/guarded-cbv/")
    redirecting = ("/async/guarded-redirect/", "/async/guarded-cbv-redirect/")

    zkflags.write("guarded", everyone=False)
    wait_until(lambda: server.get(guarded[0]).status == 404, BOUND, what="guarded off")
    for path in guarded:
        assert server.get(path, a).status == 404
    for path in redirecting:
        answer = server.get(path, a)
        assert (answer.status, answer.headers["Location"]) == (302, "/async/off/")

    zkflags.write("guarded", everyone=None, groups=[data["beta"]])
    wait_until(lambda: server.get(guarded[0], a).status == 200, BOUND, what="guarded for beta")
    for path in (*guarded, *redirecting):
        answer = server.get(path, a)
        assert answer.status == 200 and answer.body.startswith(b"async guarded")
        assert server.get(path, b).status in (302, 404)
        assert server.get(path).status in (302, 404)  # anonymous
