#!/usr/bin/env bash
# Install trd-edge with everything the demo and the tests need (Debian/Ubuntu, as root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ] \
    || ! ldconfig -p | grep -q libusb-1.0; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends mosquitto libusb-1.0-0 >/dev/null
fi
# Debian's chromium: the live view's test loads the page in a real headless browser
# (tests/test_ui.py). Best effort here (Ubuntu ships it as a snap, which containers lack);
# CI insists on it (.ci/run).
if ! command -v chromium >/dev/null 2>&1; then
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium \
      >/dev/null; } || echo "install.sh: chromium not installed; tests/test_ui.py's browser test will be skipped" >&2
fi
# The Debian package may start a system broker on 1883; the demo and tests start their own.
$SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
# torch first and pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".[train,realsense,dev]"
