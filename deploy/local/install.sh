#!/usr/bin/env bash
# Installs everything guardstream needs on a fresh Debian machine, idempotently:
#   - redis-server (apt), Java 17 and Maven are expected (apt-installed when missing)
#   - a virtualenv in .venv with the locked worker + dev dependencies (no torch)
#   - the project itself, editable
#   - the Kafka broker jars from Maven Central (via services.sh on first start)
# Usage: deploy/local/install.sh [--worker-only]
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${GUARDSTREAM_VENV:-$REPO_ROOT/.venv}
PYTHON=${PYTHON:-python3}
LOCK=$REPO_ROOT/requirements/dev.lock
[ "${1:-}" = "--worker-only" ] && LOCK=$REPO_ROOT/requirements/worker.lock

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "guardstream needs Python 3.11+; $PYTHON is $("$PYTHON" --version)" >&2; exit 1; }

stamp=$VENV/.guardstream-lock.sha256
want=$(cat "$LOCK" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== pip install -r ${LOCK#"$REPO_ROOT"/} (this takes a minute the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r "$LOCK"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO_ROOT"
  echo "$want" > "$stamp"
fi
echo "== installed: $("$VENV/bin/guardstream" --help >/dev/null && echo guardstream OK)"
