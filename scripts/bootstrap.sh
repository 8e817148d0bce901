#!/usr/bin/env bash
# Install what django-zkflags needs on a fresh machine: Java and Debian's ZooKeeper (when
# missing), a virtualenv in .venv with the package and its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-test}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to run: $*" >&2; return 1; fi
}

if [ ! -f /usr/share/java/zookeeper.jar ] || ! command -v java >/dev/null; then
  echo "bootstrap: installing Debian's zookeeper package (and Java if missing)"
  as_root apt-get update -qq
  pkgs=(zookeeper)
  command -v java >/dev/null || pkgs+=(default-jre-headless)
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  touch "$stamp"
fi
