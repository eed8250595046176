#!/usr/bin/env bash
# Runs schemathesis against a running embedq: it reads BASE_URL/openapi.json, generates valid
# and invalid requests for every operation, and checks every answer against the document (no
# 5xx, only documented statuses, content types, headers and bodies, invalid input refused,
# valid input accepted, the bearer token enforced).
#
#   tests/schemathesis/run.sh BASE_URL TOKEN [more `st run` options]
#
# The test `tests/openapi.rs` starts the daemon and calls this. schemathesis comes from PyPI
# into a virtual environment that is made on first use and reused afterwards (needs python3
# with its venv module; on Debian's python3 that is the python3-venv package).
#
# Environment:
#   EMBEDQ_SCHEMATHESIS_VENV   the virtual environment (default ~/.cache/embedq/schemathesis-venv)
#   EMBEDQ_SCHEMATHESIS_SEED   the generator's seed (default fixed, so runs repeat)
#   EMBEDQ_SCHEMATHESIS_EXAMPLES  test cases per operation and phase (default 25)
set -euo pipefail

base_url="${1:?usage: run.sh BASE_URL TOKEN [st run options]}"
token="${2:?usage: run.sh BASE_URL TOKEN [st run options]}"
shift 2

version="4.32.5"
venv="${EMBEDQ_SCHEMATHESIS_VENV:-$HOME/.cache/embedq/schemathesis-venv}"
st="$venv/bin/st"

fresh_venv() {
  command -v python3 >/dev/null || { echo "python3 is needed to run schemathesis" >&2; exit 3; }
  rm -rf "$venv"
  python3 -m venv "$venv" || {
    echo "python3 -m venv failed: install python3-venv (Debian) and try again" >&2
    exit 3
  }
}

if ! "$st" --version 2>/dev/null | grep -qF "$version"; then
  echo "== installing schemathesis $version into $venv" >&2
  [ -x "$venv/bin/pip" ] || fresh_venv
  # A venv left by another Python may not work any more: make it anew once.
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2 || {
    fresh_venv
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
  }
fi

config="$(cd "$(dirname "$0")" && pwd)/schemathesis.toml"

# Nothing is written next to the caller (hypothesis keeps no example database either).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# Every operation and every check (`--checks all`); schemathesis.toml tunes two operations.
# One worker: with threads, schemathesis can trip a thread-safety bug of CPython 3.11.7's
# ast.parse ("AST constructor recursion depth mismatch"), a runtime error of the run.
"$st" --config-file "$config" run "$base_url/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${EMBEDQ_SCHEMATHESIS_EXAMPLES:-25}" \
  --seed "${EMBEDQ_SCHEMATHESIS_SEED:-20261127}" \
  --generation-database none \
  --workers 1 \
  --request-timeout 10 \
  --no-color \
  "$@"
