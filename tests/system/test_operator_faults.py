"""Operator-side faults that need processes or a server of their own: a process killed
between the ZooKeeper commit and the database commit, and an ensemble that lost its data.

Each test prints what docs/reliability.md quotes (``pytest -s``).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from django_zkflags import runtime
from django_zkflags.api import flag_is_active_for_user
from django_zkflags.cache import store
from django_zkflags.rules import FlagRule
from django_zkflags.snapshot import decode_document
from tests.support.zookeeper import ZooKeeperError, ZooKeeperServer

from ..conftest import require_zookeeper, wait_until

REPO = Path(__file__).resolve().parents[2]


# -- 5: a kill -9 between the ZooKeeper commit and the database commit --------------------


class Site:
    """A site in its own processes: a SQLite file shared by them, one ZooKeeper root."""

    def __init__(self, hosts: str, tmp_path: Path) -> None:
        self.root = f"/site-{uuid.uuid4().hex[:10]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.support.site_settings",
            "ZKFLAGS_URL": f"zk://{hosts}{self.root}",
            "ZKFLAGS_TEST_DB": str(tmp_path / "site.sqlite3"),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "SITE_AUTOSTART": "0",
        }

    def django(self, *args: str, autostart: bool = False, check: bool = True) -> Any:
        env = {**self.env, "SITE_AUTOSTART": "1" if autostart else "0"}
        proc = subprocess.run(
            [sys.executable, "-m", "django", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def spawn(self, module: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


AUDIT_SCRIPT = """
import json, time
from django_zkflags.models import Flag, FlagChange
deadline = time.monotonic() + 30
while not FlagChange.objects.filter(change_id=CHANGE_ID).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
settled = FlagChange.objects.filter(change_id=CHANGE_ID).exists()
flag = Flag.objects.get(name="crashy")
seen = flag.zk_version
flag.note = "saved after the crash"
flag.save()
print(json.dumps({
    "settled_at_start": settled,
    "row_version_before_save": seen,
    "audit": [
        [c.action, c.username, c.source, c.zk_version, c.before and c.before.get("everyone"),
         c.after and c.after.get("everyone")]
        for c in FlagChange.objects.filter(flag_name="crashy").order_by("at", "pk")
    ],
}))
"""


def test_a_kill_between_the_zookeeper_and_database_commits_leaves_a_trail(zk_server, tmp_path):
    site = Site(zk_server.hosts, tmp_path)
    site.django("migrate", "-v0")
    site.django("zkflags", "set", "crashy", "--on")

    saver = site.spawn("tests.support.dying_saver", "crashy", "alice")
    try:
        line = saver.stdout.readline() if saver.stdout else ""
        assert line.strip() == "ZOOKEEPER-COMMITTED", (
            line,
            saver.stderr.read() if saver.stderr else "",
        )
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.wait(30)

    direct = KazooClient(hosts=zk_server.hosts)
    direct.start(timeout=15)
    try:
        data, stat = direct.get(f"{site.root}/flags/crashy")
        assert (decode_document(data)["everyone"], stat.version) == (False, 1)  # it is live
        [record_name] = direct.get_children(f"{site.root}/changes")
        record = decode_document(direct.get(f"{site.root}/changes/{record_name}")[0])
        assert (record["username"], record["source"], record["version"]) == ("alice", "admin", 1)

        # check says what is live without an audit row, with who and from where.
        checked = site.django("zkflags", "check", check=False)
        assert checked.returncode != 0
        assert "crashy: changed in ZooKeeper (version 1, by alice from 'admin'" in checked.stdout
        assert "no audit row" in checked.stdout

        # The next process to start records it (and mirrors the row), so a save from a
        # freshly loaded row is not refused.
        started = time.monotonic()
        shell = site.django(
            "shell", "-c", AUDIT_SCRIPT.replace("CHANGE_ID", repr(record["id"])), autostart=True
        )
        report = json.loads(shell.stdout.strip().splitlines()[-1])
        elapsed = time.monotonic() - started
        assert report["settled_at_start"] is True
        assert report["row_version_before_save"] == 1
        assert report["audit"] == [
            ["created", getpass.getuser(), "command", 0, None, True],
            ["changed", "alice", "admin", 1, True, False],
            ["changed", "", "orm", 2, False, False],
        ]
        wait_until(lambda: direct.get_children(f"{site.root}/changes") == [], timeout=15)
        assert "agree" in site.django("zkflags", "check").stdout
    finally:
        direct.stop()
        direct.close()
    print(
        f"\n[kill -9 between commits] live change v1 had no audit row; check reported it; the "
        f"next process start recorded it (shell run took {elapsed:.1f} s) and an ORM save "
        "from the reloaded row went through"
    )


# -- 2: an ensemble that lost its data ----------------------------------------------------


@pytest.fixture
def own_server() -> Any:
    try:
        server = ZooKeeperServer()
        server.start()
    except ZooKeeperError as exc:
        require_zookeeper(exc)
    yield server
    server.cleanup()


def test_a_wiped_ensemble_is_rejoined_without_a_restart(own_server, settings):
    root = f"/wiped-{uuid.uuid4().hex[:8]}"
    settings.ZKFLAGS_URL = f"zk://{own_server.hosts}{root}"
    settings.ZKFLAGS = {**settings.ZKFLAGS, "RESET_HISTORY_AFTER": 2.0}
    rt = runtime.start(wait=10.0)
    try:
        writer = rt.writer()
        for i in range(30):  # some history, so the server's zxid gets well ahead of zero
            writer.write_flag(FlagRule(f"filler-{i}", note=str(i)), None)
        writer.write_flag(FlagRule("wiped-on", everyone=True), None)
        wait_until(lambda: "wiped-on" in store.base.flags)

        answers: list[bool] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                answers.append(flag_is_active_for_user(None, "wiped-on"))
                time.sleep(0.001)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        own_server.stop()
        shutil.rmtree(own_server.zk_data_dir)
        own_server.start()
        back_at = time.monotonic()
        wait_until(lambda: rt.client.connected, timeout=60, interval=0.05)
        reconnected = time.monotonic() - back_at
        stop.set()
        reader.join(5)
        status = runtime.status()
        assert status["history_resets"] >= 1
        assert answers and all(answers)  # the last snapshot was served throughout
        # The wiped server has no snapshot: the process keeps what it had ...
        wait_until(lambda: "missing" in str(runtime.status()["last_error"]), timeout=15)
        assert flag_is_active_for_user(None, "wiped-on") is True
        # ... and follows ZooKeeper again once flags are written back.
        rt.writer().write_flag(FlagRule("wiped-on", everyone=False), None)
        wait_until(lambda: flag_is_active_for_user(None, "wiped-on") is False, timeout=15)
    finally:
        runtime.stop()
    print(
        f"\n[wiped ensemble] reconnected {reconnected:.1f} s after the wiped server was back "
        f"(RESET_HISTORY_AFTER 2 s); {len(answers)} reads meanwhile, all the last value"
    )
