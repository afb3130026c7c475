#!/usr/bin/env bash
# Set up (idempotent), lint, and run the whole test suite with the src doctests. Slow tests are opt-in (-m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
set +e
DAPO_REQUIRE_DEEPSPEED=1 .venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
