#!/usr/bin/env bash
# One-time (and idempotent) setup for deploy/desktop/compose.yaml:
#   1. a local CA + broker certificate      -> certs/ (gen-certs.sh)
#   2. broker users station, mes, healthcheck -> secrets/passwd (add-station.sh)
#   3. .env with the station's and the healthcheck's passwords (mode 600)
#   4. file ownership for the containers (only when run as root; otherwise prints the commands)
# Usage: ./setup.sh [EXTRA_BROKER_NAME ...]   e.g. ./setup.sh broker.plant.local 10.0.0.5
# Re-running keeps existing certificates and passwords.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mosq="$here/../mosquitto"
cd "$here"

if [ ! -f .env ]; then
  cp .env.example .env
  echo "created .env from .env.example"
fi
chmod 600 .env

env_get() { sed -n "s/^$1=//p" .env | tail -n 1; }
env_set() {
  if grep -q "^$1=" .env; then
    sed -i "s|^$1=.*|$1=$2|" .env
  else
    printf '%s=%s\n' "$1" "$2" >>.env
  fi
}
random_password() { openssl rand -base64 24 | tr -d '/+=\n' | cut -c1-24; }

# 1. certificates: the broker is reached as "mosquitto" on the compose network, and by the
#    names given on the command line from other machines.
"$mosq/gen-certs.sh" certs mosquitto localhost 127.0.0.1 "$(hostname)" "$@"

# mosquitto_passwd from the host, or from the broker image when it is not installed.
if ! command -v mosquitto_passwd >/dev/null 2>&1 && [ -z "${MOSQUITTO_PASSWD:-}" ]; then
  wrapper="$(mktemp)"
  trap 'rm -f "$wrapper"' EXIT
  cat >"$wrapper" <<WRAP
#!/usr/bin/env bash
exec docker run --rm -u "$(id -u):$(id -g)" -v "$here/secrets:$here/secrets" eclipse-mosquitto:2.0 mosquitto_passwd "\$@"
WRAP
  chmod +x "$wrapper"
  export MOSQUITTO_PASSWD="$wrapper"
fi

# 2. + 3. users and passwords
mkdir -p secrets
chmod 755 secrets
station="$(env_get TRD_EDGE_STATION)"
station="${station:-station-1}"
env_set TRD_EDGE_MQTT_USERNAME "$station"
for var in TRD_EDGE_MQTT_PASSWORD MQTT_HEALTHCHECK_PASSWORD; do
  if [ -z "$(env_get "$var")" ]; then
    env_set "$var" "$(random_password)"
  fi
done
"$mosq/add-station.sh" secrets/passwd "$station" "$(env_get TRD_EDGE_MQTT_PASSWORD)" >/dev/null
"$mosq/add-station.sh" secrets/passwd healthcheck "$(env_get MQTT_HEALTHCHECK_PASSWORD)" >/dev/null
if [ ! -s secrets/mes.password ]; then
  (umask 077 && random_password >secrets/mes.password)
fi
"$mosq/add-station.sh" secrets/passwd mes "$(cat secrets/mes.password)" >/dev/null
echo "broker users: $station, mes (password in secrets/mes.password), healthcheck"

# 4. ownership: the broker image runs as uid 1883, the station image as uid 10001.
bundle="$(env_get TRD_BUNDLE_DIR)"
bundle="${bundle:-./bundle}"
mkdir -p "$bundle"
if [ "$(id -u)" -eq 0 ]; then
  chown 1883:1883 certs/broker/server.key
  chown -R 10001:10001 "$bundle"
else
  echo "now run (as root, once):"
  echo "  sudo chown 1883:1883 $here/certs/broker/server.key"
  echo "  sudo chown -R 10001:10001 $bundle   # after copying the model bundle there"
fi
echo "done: copy your model bundle into $bundle, then: docker compose up -d --build"
