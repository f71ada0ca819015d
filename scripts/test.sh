#!/usr/bin/env bash
# Runs chainlog's test suite. Needs the Rust toolchain and python3 (which
# reads exports back in tests/cli_query.rs); it installs jq, Go and Go's
# x/mod package, rsyslog and rsyslog-gnutls, openssl, Chromium and its
# driver, and Ceph (ceph-mon, ceph-osd, radosgw) from Debian's packages when
# missing, s3s-fs from crates.io, and the Python validators into
# .venv-tests. Everything else the tests use (fixtures, the simulated disk)
# is in the repository.
#
# The installs (network and disk; s3s-fs's build is CPU) and Ceph's start
# (13-17 s of waiting) run in the background while cargo builds the tests,
# and the tests start once both are done.
set -euo pipefail
cd "$(dirname "$0")/.."

# What each test drives, from Debian:
# - tests/cli_query.rs reads exports back with jq;
# - tests/checkpoint.rs checks signed checkpoints and tree hashes against
#   Go's golang.org/x/mod/sumdb (note, tlog), an outside implementation;
# - tests/syslog_tls.rs delivers to a real rsyslog over TLS and plain TCP;
# - tests/deliveries.rs checks an HTTPS webhook against a test CA made with
#   the openssl command;
# - tests/dashboard.rs drives the dashboard in headless Chromium;
# - the Python tools' venv needs python3-venv.
PACKAGES=(jq golang-go golang-golang-x-mod-dev rsyslog rsyslog-gnutls openssl
  chromium chromium-driver python3-venv)
# - tests/archive.rs runs against Ceph's radosgw beside s3s-fs, and
#   tests/cluster_*.rs need it (a server that evaluates conditional writes
#   atomically).
CEPH_PACKAGES=(ceph-mon ceph-osd radosgw)

# missing PACKAGE...: those not installed.
missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# prepare: the Debian packages (one apt-get for all that are missing), the
# Python tools, then one Ceph for every test binary (tests/support/ceph.rs
# reads CHAINLOG_CEPH_PORT; each binary writes under prefixes of its own).
prepare() {
  local need ceph_need
  mapfile -t need < <(missing "${PACKAGES[@]}")
  mapfile -t ceph_need < <(missing "${CEPH_PACKAGES[@]}")
  if [ ${#need[@]} -gt 0 ] || [ ${#ceph_need[@]} -gt 0 ]; then
    apt-get update -qq
    export DEBIAN_FRONTEND=noninteractive
    [ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
    [ ${#ceph_need[@]} -eq 0 ] ||
      apt-get install -y -qq --no-install-recommends "${ceph_need[@]}" >/dev/null
  fi
  # tests/openapi.rs, ocsf.rs, evidence.rs and lake.rs: openapi-spec-validator,
  # openapi-core, ocsf-lib, ocsf-json-schema, cryptography and DuckDB, pinned
  # in a venv (.venv-tests).
  scripts/python-tools.sh >/dev/null
  # tests/archive.rs and others run against a real S3 server on 127.0.0.1
  # (s3s-fs, built from crates.io: CPU, beside the tests' build, which
  # leaves some of the two cores idle while it links).
  scripts/s3-server.sh install
  scripts/ceph-server.sh start "$ceph_dir/cluster" >"$ceph_dir/start.out"
}

ceph_dir=$(mktemp -d "${TMPDIR:-/tmp}/chainlog-test-ceph.XXXXXX")
prepare >"$ceph_dir/prepare.log" 2>&1 &
preparing=$!
# However the tests end: let the preparation finish, then stop Ceph.
trap 'wait "$preparing" 2>/dev/null; scripts/ceph-server.sh stop "$ceph_dir/cluster" >/dev/null 2>&1 || true; rm -rf "$ceph_dir"' EXIT

cargo test --all-targets --no-run
if ! wait "$preparing"; then
  echo "scripts/test.sh: installing or starting what the tests need failed:" >&2
  cat "$ceph_dir/prepare.log" >&2
  exit 1
fi
CHAINLOG_CEPH_PORT=$(sed -n 's/^PORT=//p' "$ceph_dir/start.out")
export CHAINLOG_CEPH_PORT

# With these set, a test whose outside part is missing fails instead of
# skipping with a note.
export CHAINLOG_REQUIRE_GO=1 CHAINLOG_REQUIRE_S3=1 CHAINLOG_REQUIRE_CEPH=1
export CHAINLOG_REQUIRE_BROWSER=1 CHAINLOG_REQUIRE_SYSLOG=1 CHAINLOG_REQUIRE_OPENSSL=1
export CHAINLOG_REQUIRE_OPENAPI=1 CHAINLOG_REQUIRE_OCSF=1 CHAINLOG_REQUIRE_PYTHON_TOOLS=1
export CHAINLOG_REQUIRE_DUCKDB=1
cargo test --all-targets "$@"
cargo test --doc
