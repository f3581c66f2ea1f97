#!/usr/bin/env bash
# Installs what tinyopt needs on a fresh machine: the Fashion-MNIST Debian package (when we can) and
# a Python 3.11 virtual environment at .venv with the pinned dependencies. Safe to run again: it only
# reinstalls when requirements.lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the Fashion-MNIST files; for the tests, Chromium (the MLflow UI in a browser) and
# PostgreSQL (MLflow's and Prefect's backend, as infra/docker-compose.yml runs them).
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v chromium >/dev/null || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: note: missing Debian packages ${need[*]}. Install them with 'sudo apt-get install ${need[*]}'"
    echo "       (Fashion-MNIST can also be downloaded by 'tinyopt fetch' on a machine with internet;"
    echo "       without chromium or postgresql the browser test or the infra test is skipped)."
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: error: tinyopt needs Python 3.11 (TensorFlow 2.21 + tfmot); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

stamp=.venv/.tinyopt-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  echo "setup: installing Python dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[test]"
  echo "$want" > "$stamp"
fi

# The project's own Prefect home (tinyopt/orchestration/prefect_home.py: .tinyopt/prefect, unless PREFECT_HOME is set):
# create and migrate its database now, once, so that the first `tinyopt run` does not wait for it
# (a first migration on a busy 2-core machine takes longer than Prefect's own startup allowance).
if [ -z "${PREFECT_API_URL:-}" ]; then
  home=${PREFECT_HOME:-$PWD/.tinyopt/prefect}
  if [ ! -f "$home/prefect.db" ]; then
    echo "setup: creating the Prefect database in $home"
    mkdir -p "$home"
    PREFECT_HOME=$home PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/prefect server database upgrade -y >/dev/null
  fi
fi
