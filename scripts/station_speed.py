"""The station's cost around the model, per camera size (issue 18): `trd-edge bench` on
D435-like recordings made with pyrealsense2's software device.

For each camera (640×480, 1280×720, depth 1280×720 + colour 1920×1080) it writes a recording
of synthetic parts (`edge.sources.rs_scenes`), then runs `trd-edge bench --camera file:REC`
with a light model (resnet18, 256², normal modality, pose alignment), once with the working
pipeline (the default) and once with the reference pipeline (full-resolution normals after
``rs.align``), and prints the overhead (every stage but inference) per camera.

    python scripts/station_speed.py [--frames 30] [--size 256] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

CAMERAS = {
    "640x480": ((640, 480), (640, 480)),
    "1280x720": ((1280, 720), (1280, 720)),
    "d1280x720+c1920x1080": ((1280, 720), (1920, 1080)),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--align", default="principal-axis")
    ap.add_argument("--out", default=None, help="keep recordings, bundles and JSON here")
    ap.add_argument("--cameras", default=",".join(CAMERAS))
    ap.add_argument("--part-region", action="store_true",
                    help="also bench the working bundle scoring on the part only "
                    "(scoring.region part, the default of newly trained working bundles)")
    args = ap.parse_args()

    from edge.commands.bench import add_bench_args, run_bench
    from edge.sources.rs_scenes import write_camera_recording
    from export.onnx_export import export_model_bundle
    from trainer.model import TRD

    work = Path(args.out or tempfile.mkdtemp(prefix="trd-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    model = TRD("resnet18").eval()
    bundles = {}
    for pipeline in ("working", "reference"):
        bundles[pipeline] = export_model_bundle(
            model, work / f"bundle-{pipeline}", args.size, "resnet18", modality="normal",
            pipeline=pipeline, align=args.align,
        )
    if args.part_region:  # the same graphs, the manifest's scoring region switched
        part = work / "bundle-working-part"
        shutil.copytree(bundles["working"], part, dirs_exist_ok=True)
        manifest = json.loads((part / "manifest.json").read_text())
        manifest["scoring"]["region"] = "part"
        (part / "manifest.json").write_text(json.dumps(manifest, indent=2))
        bundles["working, part"] = part
    rows = []
    for name in args.cameras.split(","):
        depth_size, color_size = CAMERAS[name]
        rec = work / f"{name}.db3"
        if not rec.is_file():
            write_camera_recording(rec, "puck", args.frames + args.warmup + 2, depth_size,
                                   color_size, scene_size=512, seed=1)
        for pipeline, bundle in bundles.items():
            out = work / f"bench-{name}-{pipeline.replace(', ', '-')}.json"
            parser = argparse.ArgumentParser()
            add_bench_args(parser)
            run_bench(parser.parse_args([
                "--bundle", str(bundle), "--backend", "onnxruntime", "--camera", f"file:{rec}",
                "--frames", str(args.frames), "--warmup", str(args.warmup), "--publish",
                "outbox", "--json", str(out),
            ]))
            d = json.loads(out.read_text())["backends"]["onnxruntime-fp32"]
            st = d["stages"]
            rows.append((name, pipeline, st["capture"]["p50_ms"], st["preprocess"]["p50_ms"],
                         st["postprocess"]["p50_ms"], d["overhead"]["p50_ms"],
                         d["overhead"]["p99_ms"], st["inference"]["p50_ms"],
                         d["overhead_per_inference"]))
    print("\n| camera | pipeline | capture p50 | preprocess p50 | postprocess p50 | overhead p50 "
          "| overhead p99 | inference p50 | overhead / inference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | " + " | ".join(f"{v:.1f}" for v in r[2:8]) + f" | {r[8]:.2f} |")
    print(f"\n(recordings, bundles and JSON in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
