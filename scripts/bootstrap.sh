#!/usr/bin/env bash
# Install what django-zkflags needs on a fresh machine: Java and Debian's ZooKeeper (when
# missing), a virtualenv in .venv with the package and its test tools, and with the "bench"
# extra Debian's redis-server (when missing). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-test}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to run: $*" >&2; return 1; fi
}

# Debian packages: ZooKeeper (and Java) for the suite and the demo; Chromium for the
# browser tests of the test extra (Playwright drives it; it cannot download browsers here).
pkgs=()
if [ ! -f /usr/share/java/zookeeper.jar ]; then pkgs+=(zookeeper); fi
command -v java >/dev/null || pkgs+=(default-jre-headless)
if [[ ",$EXTRAS," == *",test,"* ]] && ! command -v chromium >/dev/null; then
  pkgs+=(chromium fonts-dejavu-core)
fi
# Redis for the benchmark's waffle-on-Redis column (make bench; it starts its own server).
if [[ ",$EXTRAS," == *",bench,"* ]] && ! command -v redis-server >/dev/null \
  && [ ! -x /usr/bin/redis-server ]; then
  pkgs+=(redis-server)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${pkgs[*]}"
  as_root apt-get update -qq
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
