#!/usr/bin/env bash
# The full robustness run behind `make stress`: the load tests at full size (100 sessions x 5 turns with the
# fake model, 20 x 3 with the real model), 20 rounds of kill -9 during generation, and the hostile-input,
# injection, fault and access-control suites. CI runs the same tests with smaller counts.
# Takes about 15 minutes on 2 cores (14.8 measured on 2026-11-28). Figures: tests/artifacts/load-*.json and the printed lines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export FIRSTLINE_STRESS=1
export FIRSTLINE_KILL_ROUNDS=${FIRSTLINE_KILL_ROUNDS:-20}
exec "$PY" -m pytest -s -p no:cacheprovider -o timeout=3600 \
  tests/test_load.py tests/test_crash_recovery.py tests/test_hostile_input.py \
  tests/test_prompt_injection.py tests/test_faults.py tests/test_access_control.py "$@"
