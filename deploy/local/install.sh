#!/usr/bin/env bash
# Installs everything guardstream needs on a fresh Debian machine, idempotently:
#   - redis-server (apt), Java 17 and Maven are expected (apt-installed when missing)
#   - a virtualenv in .venv with the locked worker, dev, training and synth dependencies (torch
#     included; --worker-only: the worker's alone, no torch)
#   - g++, cmake and make (apt-installed when missing, not with --worker-only): llama-cpp-python
#     is compiled from source the first time (about 5 minutes on 2 cores; uv caches the wheel)
#   - the project itself, editable
#   - the Kafka broker jars from Maven Central (via services.sh on first start)
#   - for the deployment tests (not with --worker-only), into .local/: kustomize, the KEDA and
#     Prometheus-operator CRDs and the Compose file schema, all from the Go module proxy, with
#     the machine's Go 1.24+ or else the Go toolchain the module proxy serves
# Usage: deploy/local/install.sh [--worker-only]
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${GUARDSTREAM_VENV:-$REPO_ROOT/.venv}
PYTHON=${PYTHON:-python3}
LOCK=$REPO_ROOT/requirements/dev.lock
UV_VERSION=0.13.9
[ "${1:-}" = "--worker-only" ] && LOCK=$REPO_ROOT/requirements/worker.lock

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v openssl >/dev/null || missing+=(openssl)  # TLS certificates of the secured-services tests
if [ "${1:-}" != "--worker-only" ]; then
  # llama-cpp-python (dev lock, synth extra) is a source distribution: uv compiles llama.cpp
  # with these, in an isolated build environment that takes scikit-build-core from PyPI.
  command -v g++ >/dev/null || missing+=(g++)
  command -v cmake >/dev/null || missing+=(cmake)
  command -v make >/dev/null || missing+=(make)
fi
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "guardstream needs Python 3.11+; $PYTHON is $("$PYTHON" --version)" >&2; exit 1; }

# llama.cpp (llama-cpp-python, dev lock) is built for x86-64 with AVX2 (GGML_NATIVE=OFF), not for
# this CPU: a native build uses AMX tile instructions wherever the CPU lists them, and they fault
# on kernels that do not grant AMX to processes. uv keys its cached wheel by these settings.
LLAMA_CPP_BUILD=cmake.define.GGML_NATIVE=OFF
stamp=$VENV/.guardstream-lock.sha256
want=$( (cat "$LOCK" "$REPO_ROOT/pyproject.toml"; echo "$LLAMA_CPP_BUILD") | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # uv installs the locked wheels (torch and its CUDA libraries are several GB in dev.lock) from
  # its cache in seconds after the first time; pip would unpack them again on every fresh venv.
  echo "== installing ${LOCK#"$REPO_ROOT"/} (several minutes the first time: torch is in the dev lock," \
    "llama-cpp-python is compiled)"
  "$VENV/bin/python" -m pip install -q --upgrade pip "uv==$UV_VERSION"
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps --require-hashes \
    --config-settings "$LLAMA_CPP_BUILD" -r "$LOCK"
  "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e "$REPO_ROOT"
  echo "$want" > "$stamp"
fi

# --------------------------------------------------------------- deployment-test tools
# tests/deploy renders the kustomize overlays with the real kustomize, validates the custom
# resources against the CRDs their projects publish and docker-compose.yml against the Compose
# specification's schema. All of it comes through the Go module proxy.
KUSTOMIZE_VERSION=v5.8.1
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
COMPOSE_GO_VERSION=v2.16.2
TOOLS_DIR=$REPO_ROOT/.local/bin
SCHEMA_DIR=$REPO_ROOT/.local/schemas

GO_TOOLCHAIN=go1.24.4
GO_DIR=$REPO_ROOT/.local/$GO_TOOLCHAIN

find_go() {
  local go
  for go in "$(command -v go || true)" /usr/local/go/bin/go "$GO_DIR/bin/go"; do
    [ -n "$go" ] && [ -x "$go" ] || continue
    # kustomize $KUSTOMIZE_VERSION needs Go 1.24 or newer.
    if "$go" version | grep -Eq 'go1\.(2[4-9]|[3-9][0-9])([. ]|$)'; then echo "$go"; return 0; fi
  done
  return 1
}

# Go itself, when the machine has no Go 1.24+: the official toolchain as the Go module proxy
# serves it (module golang.org/toolchain), unpacked into .local/.
fetch_go() {
  local url="https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-amd64.zip"
  local zip=$REPO_ROOT/.local/$GO_TOOLCHAIN.zip
  echo "== fetching Go $GO_TOOLCHAIN from the Go module proxy into ${GO_DIR#"$REPO_ROOT"/}" >&2
  mkdir -p "$REPO_ROOT/.local"
  curl -fsSL --retry 3 -o "$zip" "$url"
  "$PYTHON" - "$zip" "$GO_DIR" <<'PY'
import sys, zipfile
from pathlib import Path
archive, target = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(archive) as zf:
    for info in zf.infolist():
        # Entries are named golang.org/toolchain@<version>/<path>: drop those two components.
        parts = info.filename.split("/", 2)
        relative = parts[2] if len(parts) == 3 else ""
        if not relative or info.is_dir():
            continue
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zf.read(info))
        if relative.startswith("bin/") or relative.startswith("pkg/tool/"):
            path.chmod(0o755)
PY
  rm -f "$zip"
}

install_deploy_tools() {
  local go
  if ! go=$(find_go); then
    fetch_go
    go=$(find_go) || { echo "Go $GO_TOOLCHAIN from the module proxy does not run here" >&2; exit 1; }
  fi
  mkdir -p "$TOOLS_DIR" "$SCHEMA_DIR"
  if [ "$("$TOOLS_DIR/kustomize" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
    echo "== building kustomize $KUSTOMIZE_VERSION into ${TOOLS_DIR#"$REPO_ROOT"/} (about a minute the first time)"
    GOBIN=$TOOLS_DIR "$go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  fi
  local stamp=$SCHEMA_DIR/.versions
  local want="schemas=2 keda=$KEDA_VERSION prometheus-operator=$PROMETHEUS_OPERATOR_VERSION compose-go=$COMPOSE_GO_VERSION"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== schemas: KEDA $KEDA_VERSION, Prometheus operator $PROMETHEUS_OPERATOR_VERSION CRDs," \
      "Compose spec (compose-go $COMPOSE_GO_VERSION) into ${SCHEMA_DIR#"$REPO_ROOT"/}"
    local keda prom compose
    keda=$(module_dir "$go" "github.com/kedacore/keda/v2@$KEDA_VERSION")
    prom=$(module_dir "$go" "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
    compose=$(module_dir "$go" "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION")
    install -m 0644 "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" "$SCHEMA_DIR/"
    install -m 0644 "$keda/config/crd/bases/keda.sh_triggerauthentications.yaml" "$SCHEMA_DIR/"
    install -m 0644 "$prom/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$SCHEMA_DIR/"
    install -m 0644 "$prom/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" "$SCHEMA_DIR/"
    install -m 0644 "$compose/schema/compose-spec.json" "$SCHEMA_DIR/"
    echo "$want" > "$stamp"
  fi
}

# The directory of a module version in the Go module cache (downloaded when missing).
module_dir() {
  (cd "$REPO_ROOT/.local" && "$1" mod download -json "$2") \
    | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

if [ "${1:-}" != "--worker-only" ]; then
  install_deploy_tools
fi

echo "== installed: $("$VENV/bin/guardstream" --help >/dev/null && echo guardstream OK)"
