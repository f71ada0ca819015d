#!/usr/bin/env bash
# Runs chainlog's test suite. Needs only the Rust toolchain: everything else
# the tests use (fixtures, the simulated disk) is in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets "$@"
cargo test --doc
