#!/usr/bin/env bash
# The syslog receiver tests/syslog_tls.rs sends to: rsyslog from Debian's
# packages, with its GnuTLS stream driver (rsyslog-gnutls), run
# unprivileged-style in the foreground with its own configuration, work
# directory and pid file.
#
#   scripts/syslog-server.sh install
#       install rsyslog and rsyslog-gnutls if missing
#   scripts/syslog-server.sh config DIR TLS_PORT TCP_PORT CA CERT KEY
#       write DIR/rsyslog.conf: RFC 5425 TLS (anonymous client, the
#       server's certificate CERT/KEY signed by CA) on 127.0.0.1:TLS_PORT,
#       plain TCP on 127.0.0.1:TCP_PORT, every message appended to
#       DIR/received.jsonl as one JSON object (msgid, structured data, msg
#       and the raw message); prints the rsyslogd command line to run it
#   scripts/syslog-server.sh start
#       install, make a throwaway CA and certificate for 127.0.0.1 with
#       openssl, and run rsyslogd in the foreground on free ports (to try
#       delivery by hand; the tests start their own)
set -euo pipefail

RSYSLOGD=${RSYSLOGD:-/usr/sbin/rsyslogd}
GTLS_MODULE=/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so

install() {
  if [ -x "$RSYSLOGD" ] && { [ -e "$GTLS_MODULE" ] || compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null; }; then
    return
  fi
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog rsyslog-gnutls >/dev/null; } >&2
}

config() {
  local dir=$1 tls_port=$2 tcp_port=$3 ca=$4 cert=$5 key=$6
  mkdir -p "$dir/work"
  # Messages of up to 256 KiB: a record's context alone may be 64 KiB,
  # and CEF or OCSF escaping can double it.
  cat >"$dir/rsyslog.conf" <<CONF
global(
  workDirectory="$dir/work"
  maxMessageSize="256k"
  defaultNetstreamDriverCAFile="$ca"
  defaultNetstreamDriverCertFile="$cert"
  defaultNetstreamDriverKeyFile="$key"
)
module(load="imtcp" maxSessions="64")
input(type="imtcp" name="tls" address="127.0.0.1" port="$tls_port"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" name="tcp" address="127.0.0.1" port="$tcp_port")
template(name="chainlog_received" type="string" option.json="on"
         string="{\"input\":\"%inputname%\",\"pri\":\"%pri%\",\"msgid\":\"%msgid%\",\"sd\":\"%structured-data%\",\"msg\":\"%msg%\",\"raw\":\"%rawmsg%\"}\n")
action(type="omfile" file="$dir/received.jsonl" template="chainlog_received")
CONF
  echo "$RSYSLOGD -n -f $dir/rsyslog.conf -i $dir/rsyslogd.pid"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install
  local dir tls_port tcp_port
  dir=$(mktemp -d -t chainlog-syslog-XXXXXX)
  openssl req -x509 -days 2 -subj /CN=chainlog-test-ca -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -new -subj /CN=127.0.0.1 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -keyout "$dir/key.pem" -out "$dir/leaf.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >"$dir/leaf.ext"
  openssl x509 -req -days 2 -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -extfile "$dir/leaf.ext" -out "$dir/cert.pem" 2>/dev/null
  tls_port=$(free_port)
  tcp_port=$(free_port)
  local command
  command=$(config "$dir" "$tls_port" "$tcp_port" "$dir/ca.pem" "$dir/cert.pem" "$dir/key.pem")
  cat <<EOM
rsyslogd: TLS on 127.0.0.1:$tls_port (CA $dir/ca.pem), TCP on 127.0.0.1:$tcp_port
received messages: $dir/received.jsonl
EOM
  exec $command
}

case "${1:-}" in
  install) install ;;
  config) shift; config "$@" ;;
  start) start ;;
  *) echo "usage: $0 install | config DIR TLS_PORT TCP_PORT CA CERT KEY | start" >&2; exit 2 ;;
esac
