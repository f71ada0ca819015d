#!/usr/bin/env bash
# The S3 server that enforces conditional writes atomically, for the tests
# that rely on it (tests/cluster_lease.rs, and tests/archive.rs beside
# s3s-fs): Ceph's radosgw from Debian's packages, over a one-node cluster
# (one monitor, one OSD keeping its objects in memory, no manager), all on
# 127.0.0.1, with its own configuration, data and pid files under DIR.
#
#   scripts/ceph-server.sh install
#       install ceph-mon, ceph-osd and radosgw if missing
#   scripts/ceph-server.sh start DIR
#       install, then start the cluster and radosgw on a free loopback port,
#       create an S3 user with the fixed test credentials, a bucket `audit`,
#       a bucket `audit-locked` with Object Lock enabled, and a bucket
#       `audit-open` that anyone may write; print, one per line,
#         PORT=…  ENDPOINT=http://127.0.0.1:…  BUCKET=audit
#         LOCKED_BUCKET=audit-locked  OPEN_BUCKET=audit-open
#         ACCESS_KEY=…  SECRET_KEY=…  STARTUP_MS=…
#       The daemons keep running in the background until `stop DIR`.
#   scripts/ceph-server.sh stop DIR
#       stop the daemons started in DIR (radosgw first), by their pid files
#   scripts/ceph-server.sh stop-on-eof DIR
#       wait until standard input ends, then stop DIR and remove it: a test
#       process holds the other end of the pipe, so the cluster goes when the
#       process does, however it ends
#
# By hand:
#   scripts/ceph-server.sh start /tmp/ceph     # prints the endpoint
#   export AWS_ACCESS_KEY_ID=chainlog-test AWS_SECRET_ACCESS_KEY=chainlog-test-secret
#   export AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_REGION=us-east-1
#   chainlog --dir /var/lib/audit archive --to s3://audit/prod
#   scripts/ceph-server.sh stop /tmp/ceph
set -euo pipefail

ACCESS_KEY=chainlog-test
SECRET_KEY=chainlog-test-secret
BUCKET=audit
LOCKED_BUCKET=audit-locked
OPEN_BUCKET=audit-open
PACKAGES=(ceph-mon ceph-osd radosgw)

install() {
  if command -v radosgw >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mon >/dev/null; then
    return
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; } >&2
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

now_ms() {
  date +%s%3N
}

# wait_until LIMIT_S COMMAND...: runs COMMAND every 0.2 s until it succeeds;
# fails after LIMIT_S seconds.
wait_until() {
  local limit_s=$1 deadline
  shift
  deadline=$(($(date +%s) + limit_s))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# running PID: the process exists and is not a zombie (a daemon whose
# parent is a PID 1 that does not reap stays one).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

stop() {
  local dir=$1 pidfile pid
  for pidfile in "$dir/run/client.rgw.a.pid" "$dir/run/osd.0.pid" "$dir/run/mon.a.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    wait_until 10 bash -c "$(declare -f running); ! running $pid" || kill -9 "$pid" 2>/dev/null || true
  done
}

write_config() {
  local dir=$1 fsid=$2 mon_port=$3 rgw_port=$4
  # No authentication between the daemons (one host, loopback only); S3
  # clients still sign their requests with the user's keys.
  cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms mon service mode = crc
ms service mode = crc
ms mon cluster mode = crc
ms cluster mode = crc
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
keyring = $dir/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
[mon.a]
mon data = $dir/mon/a
[osd.0]
osd data = $dir/osd/0
osd objectstore = memstore
memstore device bytes = 1073741824
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
CONF
}

start() {
  local dir=$1 started conf mon_port rgw_port fsid uuid id=""
  started=$(now_ms)
  install
  stop "$dir"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -rf "${dir:?}"/{run,log,mon,osd,rgw,ceph.conf,keyring,monmap}
  mkdir -p "$dir"/run "$dir"/log "$dir"/mon "$dir"/osd/0 "$dir"/rgw
  conf=$dir/ceph.conf
  mon_port=$(free_port)
  rgw_port=$(free_port)
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_config "$dir" "$fsid" "$mon_port" "$rgw_port"
  local log=$dir/log/setup.log
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >>"$log" 2>&1
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >>"$log" 2>&1
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" >>"$log" 2>&1
  ceph-mon -c "$conf" -i a >>"$log" 2>&1
  # The first OSD id is 0 once the monitor answers.
  uuid=$(cat /proc/sys/kernel/random/uuid)
  local deadline=$(($(date +%s) + 60))
  until id=$(timeout 10 ceph -c "$conf" --connect-timeout 5 osd new "$uuid" 2>>"$log"); do
    [ "$(date +%s)" -lt "$deadline" ] || break
    sleep 0.5
  done
  [ "$id" = 0 ] || fail "$dir" "the monitor did not come up"
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >>"$log" 2>&1
  ceph-osd -c "$conf" -i 0 >>"$log" 2>&1
  radosgw -c "$conf" -n client.rgw.a >>"$log" 2>&1
  wait_until 90 curl -fs -o /dev/null "http://127.0.0.1:$rgw_port/" || fail "$dir" "radosgw did not answer"
  timeout 60 radosgw-admin -c "$conf" user create --uid=chainlog-test --display-name=chainlog-test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >>"$log" 2>&1 || fail "$dir" "the S3 user was not created"
  # The buckets, with signed PUTs (curl's SigV4, which leaves the payload
  # hash to the caller: here, of the empty body). Object Lock must be
  # enabled when a bucket is created, and makes it versioned; on a
  # versioned bucket Ceph 16 ignores If-None-Match and refuses every
  # If-Match, so the bucket the tests write to has no Object Lock, and the
  # Object Lock test has a bucket of its own.
  create_bucket "$rgw_port" "$BUCKET" "x-amz-acl: private" >>"$log" 2>&1 ||
    fail "$dir" "the bucket was not created"
  create_bucket "$rgw_port" "$LOCKED_BUCKET" "x-amz-bucket-object-lock-enabled: true" >>"$log" 2>&1 ||
    fail "$dir" "the Object Lock bucket was not created"
  # A second bucket anyone may write (loopback only): behind a proxy that
  # drops the signature and the conditions, it is a server that ignores
  # conditional writes, for the test of the probe.
  create_bucket "$rgw_port" "$OPEN_BUCKET" "x-amz-acl: public-read-write" >>"$log" 2>&1 ||
    fail "$dir" "the open bucket was not created"
  cat <<OUT
PORT=$rgw_port
ENDPOINT=http://127.0.0.1:$rgw_port
BUCKET=$BUCKET
LOCKED_BUCKET=$LOCKED_BUCKET
OPEN_BUCKET=$OPEN_BUCKET
ACCESS_KEY=$ACCESS_KEY
SECRET_KEY=$SECRET_KEY
STARTUP_MS=$(($(now_ms) - started))
OUT
}

# create_bucket PORT NAME HEADER
create_bucket() {
  local empty_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
  curl -fsS -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: $empty_sha256" -H "$3" "http://127.0.0.1:$1/$2"
}

fail() {
  local dir=$1
  echo "ceph-server.sh: $2; the end of $dir/log/setup.log:" >&2
  tail -n 20 "$dir/log/setup.log" >&2 || true
  stop "$dir"
  exit 1
}

stop_on_eof() {
  local dir=$1
  cat >/dev/null || true
  stop "$dir"
  # Only a directory this script set up is removed.
  if [ -f "$dir/ceph.conf" ]; then
    rm -rf "${dir:?}"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?usage: $0 start DIR}" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  stop-on-eof) stop_on_eof "${2:?usage: $0 stop-on-eof DIR}" ;;
  *)
    echo "usage: $0 install | start DIR | stop DIR | stop-on-eof DIR" >&2
    exit 2
    ;;
esac
