"""What the wheel ships.

The wheel is built from a clean copy of the working tree (setuptools reuses ``build/`` and
``*.egg-info`` of the tree it builds in, which can carry files removed since), with the
environment's setuptools and no network: ``pip wheel --no-deps --no-build-isolation``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import django_zkflags

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "django_zkflags"
#: Test and benchmark tools that must never ship (they live in tests/support).
TOOLS = {"zookeeper.py", "tcpproxy.py", "flagwatcher.py", "children.py", "conftest.py"}
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".tox",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".hypothesis",
    ".zk",
    "results",
)


def source_files(directory: Path) -> set[str]:
    """Files under ``directory``, relative to the repository, as a wheel names them."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, src, dirs_exist_ok=True, ignore=NOT_COPIED)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run(
        [*command, "--no-index", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        "building the wheel failed (it needs setuptools >= 70.1, in the test extra)\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    (wheel,) = out.glob("django_zkflags-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_the_app_and_nothing_else(wheel_names: list[str]) -> None:
    dist_info = f"django_zkflags-{django_zkflags.__version__}.dist-info"
    assert {name.split("/")[0] for name in wheel_names} == {"django_zkflags", dist_info}
    tools = [name for name in wheel_names if name.rsplit("/", 1)[-1] in TOOLS]
    assert tools == [], tools
    # Exactly the app's files: every module, py.typed, templates and migrations.
    shipped = {name for name in wheel_names if name.startswith("django_zkflags/")}
    assert shipped == source_files(PACKAGE), {
        "missing": sorted(source_files(PACKAGE) - shipped),
        "extra": sorted(shipped - source_files(PACKAGE)),
    }
    assert "django_zkflags/py.typed" in shipped
    templates = source_files(PACKAGE / "templates")
    assert templates and templates <= shipped
    migrations = source_files(PACKAGE / "migrations")
    assert "django_zkflags/migrations/0001_initial.py" in migrations
    assert migrations <= shipped
