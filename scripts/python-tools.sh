#!/usr/bin/env bash
# Installs the Python tools the tests use into a virtual environment:
# ocsf-lib and ocsf-json-schema, which tests/ocsf.rs runs (via
# tests/ocsf/check.py) to validate the OCSF mapping;
# openapi-spec-validator and openapi-core, which tests/openapi.rs runs (via
# tests/openapi/check.py) to hold docs/openapi.yaml against the server, and
# prometheus_client, whose parser reads GET /metrics in
# tests/server_metrics.rs (via tests/support/prom_parse.py), and cryptography,
# whose Ed25519 an evidence pack's verify_pack.py uses in tests/evidence.rs, and DuckDB,
# which queries the lake export in tests/lake.rs (via
# tests/support/lake_query.py).
# Versions are pinned in tests/openapi/requirements.txt.
#
#   scripts/python-tools.sh          install (if needed); print the venv's python
#
# The venv is .venv-tests at the repository's root (CHAINLOG_PYTHON_VENV to
# put it elsewhere). It is rebuilt when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CHAINLOG_PYTHON_VENV:-$PWD/.venv-tests}
requirements=tests/openapi/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
# Debian's python3 needs python3-venv for `-m venv`.
if ! python3 -m venv "$venv" >/dev/null 2>&1; then
  rm -rf "$venv"
  { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; } >&2
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
