#!/usr/bin/env bash
# The README's main job: install, then train a small model on synthetic data and run a station
# that publishes verdicts to a local broker (no camera, no external broker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec trd-edge demo "$@"
