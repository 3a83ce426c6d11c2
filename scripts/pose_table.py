"""How well pose normalisation brings parts that lie at any angle to one canonical angle.

For each synthetic category, good parts are drawn at random angles; each pose method turns them
and the residue (the part's true angle minus the applied turn) is taken modulo the part's own
symmetry period (a square looks the same every 90°, a hexagon every 60°). A method that works
leaves the same residue for every part: the table prints its circular spread (degrees; a part
left at random angles spreads over the whole period) and the worst deviation from the mean.

    python scripts/pose_table.py --n 40 --image-size 128
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from edge.datasets.synthetic import SceneGenerator
from edge.processing.geometry import fit_background_plane, foreground_mask
from edge.processing.pose import pose_auto, pose_from_mask

# symmetry period (deg) of each part as it looks (outline, height and print together)
PERIOD = {"puck": None, "bracket": 360.0, "block": 90.0, "hexagon": 60.0, "disc": 360.0}


def _spread(deg: list[float], period: float) -> tuple[float, float]:
    z = np.exp(2j * np.pi * np.asarray(deg) / period)
    mean = z.mean()
    std = math.degrees(math.sqrt(max(-2 * math.log(max(abs(mean), 1e-12)), 0.0))) * period / 360
    dev = np.angle(z / (mean / abs(mean)))
    return std, float(np.abs(dev).max()) * period / (2 * math.pi)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="good parts per category")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print("| category | symmetry | method | residue spread (deg) | worst (deg) |")
    print("|---|---|---|---|---|")
    for cat, period in PERIOD.items():
        gen = SceneGenerator(cat, a.image_size, seed=a.seed)
        truth: list[float] = []
        turn: dict[str, list[float]] = {"principal-axis": [], "auto": []}
        for _ in range(a.n):
            s = gen.sample("good")
            plane = fit_background_plane(s.xyz)
            fg = foreground_mask(s.xyz, plane=plane)
            truth.append(math.degrees(s.angle))
            turn["principal-axis"].append(pose_from_mask(s.xyz, fg, plane).angle_deg)
            turn["auto"].append(pose_auto(s.xyz, fg, plane, s.rgb).angle_deg)
        for method, applied in turn.items():
            if period is None:  # fully round: every angle looks the same; report the turns
                turned = sum(t != 0.0 for t in applied)
                print(f"| {cat} | round | {method} | (any angle is canonical) | "
                      f"{turned}/{a.n} turned |")
                continue
            std, worst = _spread([t - u for t, u in zip(truth, applied, strict=True)], period)
            print(f"| {cat} | {360 / period:.0f}-fold | {method} | {std:.1f} | {worst:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
