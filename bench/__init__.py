"""django-zkflags benchmark: checks, templates, requests, propagation, scale and changes.

Run ``.venv/bin/python bench/run.py`` or ``.venv/bin/python -m bench`` (``--smoke`` for a
quick run with small sizes, ``--out DIR`` for where results.json / results.png go, default
bench/results/, ``--only checks,changes`` for some sections).

It starts its own ZooKeeper (tests.support.zookeeper) and its own redis-server on free
loopback ports, configures Django in code (SQLite in a temp dir, migrations run), and
measures django-zkflags against a plain dict lookup, a function call and django-waffle
(LocMem and Redis caches). Every figure is the median of repeated samples; micro-benchmarks
are ``timeit`` loops of many iterations per sample, and competing variants are sampled in
turn (interleaved) so that drift of the machine hits all of them alike. Watching and
serving processes are the test suite's own child program (tests/support/flagwatcher.py,
driven through tests/support/children.py).

django-waffle, redis (the client and redis-server) and matplotlib are optional: what needs
them is reported as null / "n/a" when they are missing. The exit status is 0 whether
targets pass or fail; non-zero only if the benchmark itself crashed.

The package: ``harness`` (plans, timing loops, percentiles, servers, child processes),
``context`` (the benchmark's process and its fixtures, trees of many flags),
``django_app`` (Django configured in code), ``scenarios`` (one module a section),
``report`` (targets, table, chart) and ``cli`` (the command line).

See docs/performance.md for what is compared, how, and the latest figures.
"""
