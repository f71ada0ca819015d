#!/usr/bin/env bash
# Runs chainlog's test suite. Needs the Rust toolchain and python3 (which
# reads exports back in tests/cli_query.rs); it installs jq, Go and Go's
# x/mod package, rsyslog and rsyslog-gnutls, and Ceph (ceph-mon, ceph-osd,
# radosgw) from Debian's packages when missing, and the Python validators
# into .venv-tests.
# Everything else the tests use (fixtures, the simulated disk) is in the
# repository.
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/cli_query.rs reads exports back with jq (and skips that part, with a
# note, only when jq cannot be installed).
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; } || true
# tests/checkpoint.rs checks signed checkpoints and tree hashes against Go's
# golang.org/x/mod/sumdb (note, tlog), an outside implementation.
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/golang.org/x/mod/sumdb ]; then
  apt-get update -qq && apt-get install -y -qq golang-go golang-golang-x-mod-dev >/dev/null
fi
export CHAINLOG_REQUIRE_GO=1
# tests/archive.rs runs against a real S3 server on 127.0.0.1 (s3s-fs).
scripts/s3-server.sh install
export CHAINLOG_REQUIRE_S3=1
# tests/archive.rs runs against Ceph's radosgw too, and tests/cluster_lease.rs
# needs it (a server that evaluates conditional writes atomically): Debian's
# ceph-mon, ceph-osd and radosgw, started per test binary.
scripts/ceph-server.sh install
export CHAINLOG_REQUIRE_CEPH=1
# tests/dashboard.rs drives the dashboard in headless Chromium (Debian's
# chromium and chromium-driver, which the test installs when missing); here a
# browser that cannot be installed fails the test instead of skipping it.
export CHAINLOG_REQUIRE_BROWSER=1
# tests/syslog_tls.rs delivers to a real rsyslog (Debian's rsyslog and
# rsyslog-gnutls) over TLS and plain TCP.
scripts/syslog-server.sh install
export CHAINLOG_REQUIRE_SYSLOG=1
# tests/deliveries.rs checks an HTTPS webhook against a test CA made with the
# openssl command (Debian's openssl).
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
export CHAINLOG_REQUIRE_OPENSSL=1
# tests/openapi.rs holds docs/openapi.yaml against the running server with
# openapi-spec-validator and openapi-core, pinned in a venv (.venv-tests).
scripts/python-tools.sh >/dev/null
export CHAINLOG_REQUIRE_OPENAPI=1
# tests/ocsf.rs validates the OCSF mapping with ocsf-lib and
# ocsf-json-schema, from the same venv.
export CHAINLOG_REQUIRE_OCSF=1
# tests/evidence.rs runs an evidence pack's verify_pack.py with that venv's
# cryptography (Ed25519).
export CHAINLOG_REQUIRE_PYTHON_TOOLS=1
# tests/lake.rs queries the lake export with DuckDB, from the same venv.
export CHAINLOG_REQUIRE_DUCKDB=1
cargo test --all-targets "$@"
cargo test --doc
