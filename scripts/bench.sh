#!/usr/bin/env bash
# The benchmarks: venv + install (with the bench extra), then benchmarks/run.py.
# Arguments go to run.py, e.g. --quick (albert-base-v2 only, fewer runs) or --wait-quiet 20.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
stamp=.venv/.kzoo-bench-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
  echo "$want" > "$stamp"
fi
exec .venv/bin/python benchmarks/run.py "$@"
