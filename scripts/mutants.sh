#!/usr/bin/env bash
# Mutation testing of the pure OKR rules against their table tests (issue 14, item 7).
# Prints each surviving mutant, then "killed K, survived S, equivalent E (of N ...)".
# Extra arguments go to scripts/mutants.py (e.g. -v to list every mutant, --jobs 1).
# Not part of scripts/test.sh: it runs every mutant against the tests, which takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install --quiet -e ".[test]"; }
exec .venv/bin/python scripts/mutants.py "$@"
