"""What an operator of a ZooKeeper shop uses: Debian's ``zkCli.sh``, run non-interactively."""

from __future__ import annotations

import os
import shutil
import subprocess

ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"


def zkcli_path() -> str | None:
    return ZKCLI if os.access(ZKCLI, os.X_OK) else shutil.which("zkCli.sh")


def zkcli(hosts: str, *command: str, timeout: float = 60.0) -> str:
    """Run one zkCli.sh command against ``hosts`` and return its output; raise on failure."""
    program = zkcli_path()
    if program is None:
        raise FileNotFoundError("zkCli.sh (Debian's zookeeper package) is not installed")
    proc = subprocess.run(
        [program, "-server", hosts, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"zkCli.sh {' '.join(command)} failed: {proc.stdout}{proc.stderr}")
    return proc.stdout
