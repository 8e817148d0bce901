"""``python bench/run.py [--smoke] [--out DIR] [--only SECTIONS] [--chart PATH]``: the
benchmark, run by path (``make bench``); the code is the ``bench`` package beside it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run by path, Python puts bench/ itself first on sys.path: put the repository there instead,
# so that the package (bench) and the test suite's helpers (tests.support) import, and no
# module of bench/ shadows another of the same name.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
