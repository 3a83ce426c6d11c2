#!/usr/bin/env bash
# Run the Jetson station container (image built from deploy/jetson/Dockerfile).
#
# Usage: deploy/jetson/docker-run.sh [IMAGE]       (default IMAGE: trd-edge:jetson)
# Environment (all optional):
#   TRD_ETC=/etc/trd-edge        host folder with station.yaml, station.env and ca.crt
#   TRD_STATE=/var/lib/trd-edge  host folder for the bundle (+ engines) and the outbox;
#                                must be writable by uid 10001 (the container user)
#   TRD_SKIP_TRT_CHECK=1         start even when TensorRT is not usable in the container
#
# --runtime nvidia      the NVIDIA container runtime maps the Jetson GPU and its libraries
# /dev/bus/usb + device-cgroup-rule 189: the RealSense through libusb, also after re-plugging
# device-cgroup-rule 81: the camera's V4L2 nodes
# --restart unless-stopped: supervised by Docker; SIGTERM (docker stop) drains verdicts to
#   the outbox, hence the 30 s stop timeout.
set -euo pipefail

image="${1:-trd-edge:jetson}"
etc="${TRD_ETC:-/etc/trd-edge}"
state="${TRD_STATE:-/var/lib/trd-edge}"

env_args=()
if [ -f "$etc/station.env" ]; then
  env_args=(--env-file "$etc/station.env")
fi

# Run-time TensorRT check (the image cannot check it when it is built: JetPack's TensorRT
# libraries are mounted by the NVIDIA runtime only into running containers). Fails here, with
# the reason and the fix, instead of a station that quietly runs on the CPU.
if [ "${TRD_SKIP_TRT_CHECK:-0}" != 1 ]; then
  if ! docker run --rm --runtime nvidia --entrypoint python "$image" -c \
      'from edge.backends.tensorrt_backend import tensorrt_problem as p; e = p(); print(e or "TensorRT OK"); raise SystemExit(e is not None)'; then
    echo "docker-run.sh: TensorRT is not usable in $image (reason and fix above);" \
      "the station would run on the CPU. TRD_SKIP_TRT_CHECK=1 starts it anyway." >&2
    exit 1
  fi
fi

exec docker run -d --name trd-edge \
  --runtime nvidia \
  --restart unless-stopped \
  --stop-timeout 30 \
  --network host \
  -v /dev/bus/usb:/dev/bus/usb \
  --device-cgroup-rule "c 189:* rmw" \
  --device-cgroup-rule "c 81:* rmw" \
  -v "$etc/station.yaml:/etc/trd-edge/station.yaml:ro" \
  -v "$etc/ca.crt:/etc/trd-edge/ca.crt:ro" \
  -v "$state:/var/lib/trd-edge" \
  "${env_args[@]}" \
  "$image"
