#!/usr/bin/env bash
# Install trd-edge as a supervised systemd service on a Jetson (JetPack 6) or a Linux PC,
# without containers. Safe to re-run (idempotent): it upgrades the package and units but never
# overwrites /etc/trd-edge/station.yaml or station.env.
#
# Usage: sudo deploy/jetson/install_host.sh [--src DIR] [--extras LIST] [--start] [--dry-run]
#   --src DIR      trd-edge checkout or wheel to install (default: this checkout)
#   --extras LIST  pip extras (default: realsense,trt); never "train": the station needs no torch
#   --start        (re)start the service at the end (default: enable only)
#   --dry-run      print what would be done, change nothing
#
# Result:
#   /opt/trd-edge/venv          Python venv (system site packages visible: JetPack's TensorRT)
#   user trd-edge               system user, groups plugdev + video (camera, GPU)
#   /etc/udev/rules.d/99-trd-edge-realsense.rules
#   /etc/systemd/system/trd-edge.service, trd-edge-gpu.service (desktop GPU: loads nvidia-uvm)
#                               (+ trd-edge-clocks.service and a device drop-in on Jetson)
#   /etc/trd-edge/station.yaml  config (from deploy/station.example.yaml, edit it)
#   /etc/trd-edge/station.env   secrets, e.g. TRD_EDGE_MQTT_PASSWORD=... (mode 0640)
#   /var/lib/trd-edge           bundle, engines, outbox (owned by trd-edge)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
deploy="$(dirname "$here")"
src="$(dirname "$deploy")"
extras="realsense,trt"
start=0
dry=0
prefix=/opt/trd-edge
user=trd-edge
etc=/etc/trd-edge
state=/var/lib/trd-edge
unit_dir=/etc/systemd/system

while [ $# -gt 0 ]; do
  case "$1" in
    --src) src="${2:?--src needs a path}"; shift 2 ;;
    --extras) extras="${2:?--extras needs a list}"; shift 2 ;;
    --start) start=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install_host.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

case ",$extras," in
  *,train,*) echo "install_host.sh: the 'train' extra pulls torch; a station does not need it" >&2; exit 2 ;;
esac

run() {
  if [ "$dry" -eq 1 ]; then
    echo "+ $*"
  else
    "$@"
  fi
}
step() { echo "==> $*"; }

if [ "$dry" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install_host.sh: run as root (sudo $0 $*)" >&2
  exit 1
fi

jetson=0
if [ -f /etc/nv_tegra_release ]; then
  jetson=1
fi

step "system packages (python3-venv, libusb for pyrealsense2)"
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in python3-venv python3-pip libusb-1.0-0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    run apt-get update
    run apt-get install -y --no-install-recommends "${missing[@]}"
  fi
else
  echo "    no apt-get: install python3 (>=3.10) with venv and libusb-1.0 yourself"
fi

step "service user $user (groups plugdev, video)"
getent group plugdev >/dev/null || run groupadd --system plugdev
getent group video >/dev/null || run groupadd --system video
if ! getent passwd "$user" >/dev/null; then
  run useradd --system --user-group --home-dir "$state" --no-create-home \
    --shell /usr/sbin/nologin "$user"
fi
run usermod --append --groups plugdev,video "$user"

step "Python environment in $prefix/venv (trd-edge[$extras], no torch)"
run install -d -m 0755 "$prefix" "$prefix/docs"
if [ ! -x "$prefix/venv/bin/python" ]; then
  run python3 -m venv --system-site-packages "$prefix/venv"
fi
run "$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
run "$prefix/venv/bin/python" -m pip install --quiet --upgrade "${src}[${extras}]"
run "$prefix/venv/bin/python" -c 'import sys, edge.cli, edge.backends; assert "torch" not in sys.modules, "torch was imported"'
if [ -f "$src/docs/deploy.md" ]; then
  run install -m 0644 "$src/docs/deploy.md" "$prefix/docs/deploy.md"
fi

step "udev rules for the RealSense camera"
run install -m 0644 "$deploy/udev/99-trd-edge-realsense.rules" /etc/udev/rules.d/99-trd-edge-realsense.rules
if command -v udevadm >/dev/null 2>&1; then
  run udevadm control --reload-rules
  run udevadm trigger --subsystem-match=usb --subsystem-match=video4linux
fi

step "configuration in $etc (kept if present)"
run install -d -m 0750 -o root -g "$user" "$etc"
if [ ! -e "$etc/station.yaml" ]; then
  run install -m 0640 -o root -g "$user" "$deploy/station.example.yaml" "$etc/station.yaml"
fi
if [ ! -e "$etc/station.env" ]; then
  if [ "$dry" -eq 1 ]; then
    echo "+ write $etc/station.env (mode 0640, root:$user)"
  else
    (umask 027 && printf '# Secrets for trd-edge.service (EnvironmentFile). Example:\n# TRD_EDGE_MQTT_PASSWORD=...\n' >"$etc/station.env")
    chown "root:$user" "$etc/station.env"
  fi
fi
run install -d -m 0750 -o "$user" -g "$user" "$state" "$state/outbox"

step "systemd units"
run install -m 0644 "$deploy/systemd/trd-edge.service" "$unit_dir/trd-edge.service"
# pulled in by trd-edge.service (Wants=): loads nvidia-uvm on a desktop GPU, a no-op on a Jetson
run install -m 0644 "$deploy/systemd/trd-edge-gpu.service" "$unit_dir/trd-edge-gpu.service"
if [ "$prefix" != /opt/trd-edge ]; then
  run sed -i "s|/opt/trd-edge/|$prefix/|g" "$unit_dir/trd-edge.service"
fi
if [ "$jetson" -eq 1 ]; then
  run install -d -m 0755 "$unit_dir/trd-edge.service.d"
  run install -m 0644 "$deploy/systemd/jetson-devices.conf" "$unit_dir/trd-edge.service.d/jetson-devices.conf"
  run install -m 0644 "$deploy/systemd/trd-edge-clocks.service" "$unit_dir/trd-edge-clocks.service"
fi
if command -v systemctl >/dev/null 2>&1; then
  run systemctl daemon-reload
  run systemctl enable trd-edge.service
  if [ "$jetson" -eq 1 ]; then
    run systemctl enable trd-edge-clocks.service
  fi
  if [ "$start" -eq 1 ]; then
    run systemctl restart trd-edge.service
  fi
else
  echo "    systemctl not found: start $prefix/venv/bin/trd-edge run --config $etc/station.yaml yourself"
fi

cat <<NEXT
==> done. Next:
  1. copy the model bundle to $state/bundle and: sudo chown -R $user:$user $state/bundle
  2. edit $etc/station.yaml (station id, broker URL, CA) and put the broker password in
     $etc/station.env as TRD_EDGE_MQTT_PASSWORD=...
  3. check everything: sudo -u $user $prefix/venv/bin/trd-edge doctor --config $etc/station.yaml
  4. sudo systemctl start trd-edge && journalctl -u trd-edge -f
NEXT
