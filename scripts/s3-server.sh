#!/usr/bin/env bash
# The S3-compatible server the archive tests (tests/archive.rs) run against:
# s3s-fs, a small S3 server over a directory that checks request signatures.
#
#   scripts/s3-server.sh install   install s3s-fs (from crates.io) if missing
#   scripts/s3-server.sh start     install, then start it in the foreground on
#                                  127.0.0.1 on a free port, with a temporary
#                                  root directory, a bucket `audit` and fixed
#                                  credentials; prints the environment to use
#
# The tests start their own servers (each on a free loopback port, killed at
# the end); `start` is for trying `chainlog archive` by hand:
#
#   scripts/s3-server.sh start &        # prints the exports below
#   export AWS_ACCESS_KEY_ID=chainlog-test AWS_SECRET_ACCESS_KEY=chainlog-test-secret
#   export AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_REGION=us-east-1
#   chainlog --dir /var/lib/audit archive --to s3://audit/prod
set -euo pipefail

S3S_FS_VERSION=0.14.1
ACCESS_KEY=chainlog-test
SECRET_KEY=chainlog-test-secret

install() {
  if command -v s3s-fs >/dev/null || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
    return
  fi
  # A debug build: it compiled in 1 min 16 s against 8 min 30 s for a
  # release build on two cores (a third of CI's time on a fresh machine), and
  # the tests it serves take 6 s longer with it in all (tests/archive.rs:
  # 41 s against 35 s).
  cargo install "s3s-fs@${S3S_FS_VERSION}" --locked --features binary --debug
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install
  local bin root port
  bin=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
  root=$(mktemp -d -t chainlog-s3-XXXXXX)
  mkdir -p "$root/audit"
  port=$(free_port)
  cat <<EOF
s3s-fs on http://127.0.0.1:$port, root $root, bucket audit
export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_REGION=us-east-1
EOF
  exec "$bin" --host 127.0.0.1 --port "$port" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$root"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  *)
    echo "usage: $0 install|start" >&2
    exit 2
    ;;
esac
