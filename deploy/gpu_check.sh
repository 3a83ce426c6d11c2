#!/usr/bin/env bash
# One prepared GPU check (for a session or an engineer with an NVIDIA GPU and torch+CUDA):
# full-size TRD (wide_resnet50_2, 256²) latency per frame with torch CUDA FP32 vs FP16, CUDA
# graphs, and parity with the CPU onnxruntime result. Prints a table; ~3-5 minutes on an H100.
# Usage: bash deploy/gpu_check.sh [FRAMES]
set -euo pipefail
cd "$(dirname "$0")/.."
frames="${1:-20}"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print(torch.cuda.get_device_name(0))"
python3 -m export.bench --backbone wide_resnet50_2 --image-size 256 --frames "$frames" --device cuda --cuda-graphs
python3 -m export.bench --backbone resnet18 --image-size 256 --frames "$frames" --device cuda --cuda-graphs
