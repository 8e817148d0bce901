"""The admin's flag list at 100, 10,000 and 100,000 flags: render time and SQL queries per
page (test client, the suite's settings, SQLite in memory). Run by the "scale" section in a
process of its own; alone::

    python -m bench.admin_list [--zk zk://host:port/root] [SIZE ...]

It prints one JSON object: ``{size: {page: {"ms": median, "queries": n}}}``. The rows are
bulk-created (no ZooKeeper write) and the matching snapshot is published in this process,
as a watching process would hold it; the list reads rows and the snapshot, never ZooKeeper
(tests/integration/test_admin_list_scale.py asserts that), except the fleet header's
few reads: give it a ZooKeeper with ``--zk`` (without one, it waits for it on every page).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

PAGES = {
    "first page": "",
    "filtered and searched": "everyone=rules&rule=staff&q=flag-00",
    "last page": "p=LAST",
}
REPEATS = 5


def main(sizes: list[int], zk_url: str | None = None) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    if zk_url:
        from django.test.utils import override_settings

        override_settings(ZKFLAGS_URL=zk_url).enable()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    from django_zkflags.cache import store
    from django_zkflags.models import Flag
    from django_zkflags.snapshot import Snapshot, compile_entries
    from tests.support.admin_pages import ADMIN, editor_client

    setup_test_environment()
    call_command("migrate", verbosity=0, interactive=False)
    client = editor_client()
    from bench.context import mixed_rule

    out: dict[str, Any] = {}
    made = 0
    rules: dict[str, Any] = {}
    for size in sorted(sizes):
        new = [mixed_rule(i) for i in range(made, size)]
        Flag.objects.bulk_create(
            [Flag(name=r.name, zk_version=0, **Flag.values_from_rule(r)) for r in new],
            batch_size=5000,
        )
        made = size
        rules.update({r.name: {**r.to_document(), "version": 0} for r in new})
        flags, _errors = compile_entries(rules)
        store.publish(Snapshot(flags, source="zookeeper"))
        last = max(1, -(-size // 100))
        client.get(ADMIN)  # warm: templates, session
        out[str(size)] = {}
        for label, query in PAGES.items():
            url = f"{ADMIN}?{query.replace('LAST', str(last))}" if query else ADMIN
            times, queries = [], 0
            for _ in range(REPEATS):
                with CaptureQueriesContext(connection) as captured:
                    started = time.perf_counter()
                    response = client.get(url)
                    times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (url, response.status_code)
                queries = len(captured)
            out[str(size)][label] = {"ms": round(statistics.median(times), 1), "queries": queries}
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    url = None
    if args[:1] == ["--zk"]:
        url, args = args[1], args[2:]
    print(json.dumps(main([int(arg) for arg in args] or [100, 10_000, 100_000], url)))
