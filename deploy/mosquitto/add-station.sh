#!/usr/bin/env bash
# Add or update a broker user (idempotent): a station (username = station id) or the MES.
#
# Usage: add-station.sh PASSWD_FILE USERNAME [PASSWORD]
#   Without PASSWORD a random one is generated and printed once: put it in the station's
#   /etc/trd-edge/station.env as TRD_EDGE_MQTT_PASSWORD=... (or the compose .env file).
#   The ACL (deploy/mosquitto/acl) lets user "station-7" write only trd/station-7/#.
#   Then make the running broker reload its users: `docker compose kill -s HUP mosquitto`
#   or `sudo systemctl reload mosquitto` (mosquitto re-reads password and ACL files on SIGHUP).
#
# Needs mosquitto_passwd (Debian: apt-get install mosquitto); set MOSQUITTO_PASSWD to use
# another binary.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
file="$1"
user="$2"
password="${3:-}"

# Same rule as StationConfig.station: one topic level, safe for %u in ACL patterns.
if ! [[ "$user" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]]; then
  echo "add-station.sh: invalid username '$user': use letters, digits, '_', '.', '-' (max 64)" >&2
  exit 2
fi

bin="${MOSQUITTO_PASSWD:-}"
if [ -z "$bin" ]; then
  bin="$(command -v mosquitto_passwd || true)"
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "add-station.sh: mosquitto_passwd not found: apt-get install mosquitto, or set MOSQUITTO_PASSWD" >&2
  exit 1
fi

generated=0
if [ -z "$password" ]; then
  password="$(openssl rand -base64 24 | tr -d '/+=\n' | cut -c1-24)"
  generated=1
fi

mkdir -p "$(dirname "$file")"
if [ -s "$file" ]; then
  "$bin" -b "$file" "$user" "$password"
  echo "updated user $user in $file"
else
  "$bin" -c -b "$file" "$user" "$password"
  echo "created $file with user $user"
fi
# The file holds only salted hashes; the broker (another user in the container) must read it.
chmod 644 "$file"
if [ "$generated" -eq 1 ]; then
  echo "password for $user (shown once): $password"
fi
