#!/usr/bin/env bash
# The main job: venv + install, then convert, verify and run a model end to end (offline by default).
# Arguments go to scripts/main_job.py, e.g. --checkpoint DIR for real weights.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec .venv/bin/python scripts/main_job.py "$@"
