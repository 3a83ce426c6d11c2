#!/usr/bin/env bash
# Generate a local certificate authority and a broker certificate for mosquitto's TLS listener.
#
# Usage: gen-certs.sh [--force] [--owner UID:GID] OUT_DIR [NAME ...]
#   OUT_DIR       gets ca/ca.key (keep private, NOT mounted into the broker), broker/ca.crt,
#                 broker/server.crt, broker/server.key
#   NAME          host names / IP addresses the stations use to reach the broker; they go into
#                 the certificate's subjectAltName (default: mosquitto localhost 127.0.0.1 and
#                 this machine's host name). Clients check the name they dialled against it.
#   --owner U:G   chown the broker files (the eclipse-mosquitto image runs as 1883:1883;
#                 a Debian host broker as mosquitto:mosquitto); needs root
#   --force       replace existing files (otherwise existing files are kept: idempotent)
#
# Stations need only broker/ca.crt (mqtt.tls.ca) to verify the broker.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

force=0
owner=""
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1; shift ;;
    --owner) owner="${2:?--owner needs UID:GID}"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) echo "gen-certs.sh: unknown option $1" >&2; usage 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage 2
out="$1"; shift
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is missing (apt-get install openssl)" >&2; exit 1; }

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(mosquitto localhost 127.0.0.1 "$(hostname)")
fi
san=""
for n in "${names[@]}"; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san="${san%,}"

ca_dir="$out/ca"
broker_dir="$out/broker"
mkdir -p "$ca_dir" "$broker_dir"
chmod 700 "$ca_dir"
umask 077

if [ "$force" -eq 1 ] || [ ! -s "$ca_dir/ca.key" ] || [ ! -s "$broker_dir/ca.crt" ]; then
  openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes \
    -keyout "$ca_dir/ca.key" -out "$broker_dir/ca.crt" \
    -subj "/CN=trd-edge local CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  force=1  # a new CA invalidates the old server certificate
  echo "created CA $broker_dir/ca.crt (private key $ca_dir/ca.key)"
fi

if [ "$force" -eq 1 ] || [ ! -s "$broker_dir/server.key" ] || [ ! -s "$broker_dir/server.crt" ]; then
  openssl req -newkey rsa:2048 -sha256 -nodes \
    -keyout "$broker_dir/server.key" -out "$broker_dir/server.csr" \
    -subj "/CN=${names[0]}" 2>/dev/null
  ext="$(mktemp)"
  trap 'rm -f "$ext"' EXIT
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$san" >"$ext"
  openssl x509 -req -in "$broker_dir/server.csr" -CA "$broker_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
    -CAcreateserial -CAserial "$ca_dir/ca.srl" -days 825 -sha256 -extfile "$ext" \
    -out "$broker_dir/server.crt" 2>/dev/null
  rm -f "$broker_dir/server.csr"
  echo "created broker certificate $broker_dir/server.crt for $san"
else
  echo "kept existing certificates in $broker_dir (use --force to replace them)"
fi

chmod 644 "$broker_dir/ca.crt" "$broker_dir/server.crt"
chmod 640 "$broker_dir/server.key"
chmod 755 "$broker_dir"
if [ -n "$owner" ]; then
  chown "$owner" "$broker_dir/server.key" "$broker_dir/server.crt" "$broker_dir/ca.crt"
fi
