#!/usr/bin/env bash
# The test suite: venv + install, then pytest (full-size models are opt-in: -m slow).
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder -p no:cacheprovider "$@"
