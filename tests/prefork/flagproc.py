"""Follow one flag in this process (and optionally in forked children) and report it.

    python tests/prefork/flagproc.py NAME [--gevent] [--fork N]

``--gevent`` monkey-patches with gevent before anything else is imported. Django is set
up with ``tests.prefork.settings`` (``AppConfig.ready`` starts the watcher, as in any
deployment). ``--fork N`` then forks N children without exec, the way uWSGI without
lazy-apps does; the parent keeps serving too.

Every process writes one JSON line to stdout whenever its view of the flag (value, version,
session, connection, reads) changes, and stops at EOF on stdin; the parent then reports how each
child exited and exits 0 only if they all exited 0.
"""

import sys

if "--gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import json
import os
import select

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.prefork.settings")

import django

django.setup()

from tests.prefork.report import flag_state  # noqa: E402


def emit(record: dict) -> None:
    # One write per line (well under PIPE_BUF): lines of several processes never mix.
    os.write(1, (json.dumps(record) + "\n").encode())


def serve(role: str, name: str) -> None:
    last = None
    while True:
        state = flag_state(name)
        key = tuple(state[k] for k in ("active", "version", "session", "connected", "reads"))
        if key != last:
            emit({"role": role, **state})
            last = key
        readable, _, _ = select.select([0], [], [], 0.02)
        if readable and not os.read(0, 1024):
            return


def main() -> int:
    name = sys.argv[1]
    children = int(sys.argv[sys.argv.index("--fork") + 1]) if "--fork" in sys.argv else 0
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            serve("child", name)
            sys.exit(0)  # a normal exit: atexit hooks (the runtime's close) run
        pids.append(pid)
    serve("parent", name)
    ok = True
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        emit({"role": "exit", "pid": pid, "code": code})
        ok = ok and code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
