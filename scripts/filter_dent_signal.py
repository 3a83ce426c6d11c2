"""How much of a dent survives librealsense's filters (docs/sensor-model.md, issue 17).

A noise-free D435 model (``subpixel 0``, 0.1 mm depth units) renders parts with one geometry
defect of a fixed depth and their defect-free twins; both pass through the filters
(`edge.sources.rs_depth_filter`, ``frames`` still captures, the last kept). Prints, per filter
chain, the share of the dent's depth (max |defect − twin| inside the mask) and of its steepest
slope (max depth gradient inside the mask) that is left:

    python scripts/filter_dent_signal.py --filters spatial temporal spatial,temporal
"""

from __future__ import annotations

import argparse

import numpy as np

from edge.datasets.sensors import get_sensor
from edge.datasets.synthetic import SceneGenerator, _filter_chain, filter_scene
from edge.sources.acquisition import parse_filter_spec


def kept(filters: str, parts: int, dent_mm: float, distance: float, size: int,
         frames: int) -> tuple[float, float]:
    """Mean share of (dent depth, steepest dent slope) left after ``filters``."""
    spec = get_sensor("d435", subpixel=0.0, depth_unit_m=0.0001)
    depth, slope = [], []
    for seed in range(parts):
        gen = SceneGenerator("puck", size, seed=seed, sensor=spec, distance=distance,
                             dent_depth=(dent_mm / 1e3, dent_mm / 1e3))
        scene, twin = gen.sample_with_twin("geometry")
        mask = scene.mask
        with _filter_chain(gen, parse_filter_spec(filters)) as chain:
            out = []
            for s in (scene, twin):
                chain.new_part()
                out.append([filter_scene(s, chain, gen) for _ in range(frames)][-1])
        before = scene.xyz[..., 2] - twin.xyz[..., 2]
        after = out[0].xyz[..., 2] - out[1].xyz[..., 2]
        depth.append(np.abs(after[mask]).max() / np.abs(before[mask]).max())
        g0 = np.hypot(*np.gradient(scene.xyz[..., 2]))
        g1 = np.hypot(*np.gradient(out[0].xyz[..., 2]))
        slope.append(g1[mask].max() / g0[mask].max())
    return float(np.mean(depth)), float(np.mean(slope))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--filters", nargs="+", default=["spatial", "temporal", "spatial,temporal"])
    p.add_argument("--parts", type=int, default=6)
    p.add_argument("--dent-mm", type=float, default=3.0)
    p.add_argument("--distance", type=float, default=0.55)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=8, help="still captures per part")
    a = p.parse_args()
    print(f"D435 at {a.distance} m, noise-free, {a.dent_mm:g} mm dents, {a.parts} parts, "
          f"{a.size} px, {a.frames} frames per part")
    for filters in a.filters:
        depth, slope = kept(filters, a.parts, a.dent_mm, a.distance, a.size, a.frames)
        print(f"  {filters:<24} dent depth kept {depth:.2f}   steepest slope kept {slope:.2f}")


if __name__ == "__main__":
    main()
