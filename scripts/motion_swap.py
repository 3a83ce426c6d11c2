"""Would per-stop averaging see a part swapped for a look-alike? (docs/sensor-model.md)

Per-stop averaging (`edge.sources.averaging`) starts a new stop only when a frame differs from
the stop's first by the motion rule. A part replaced between two frames by one at the same pose
that differs only by a defect is a new stop only if the defect alone passes that rule. For each
defect type: the good part's frame against its defective twin's (same scene, same pose), with
the twin's sensor noise the same (identical frames but the defect) or fresh (a second capture).

    python scripts/motion_swap.py --sizes 64 128 --seeds 20
"""

from __future__ import annotations

import argparse

from edge.datasets.synthetic import DEFECT_TYPES, SceneGenerator
from edge.frames import Frame, Intrinsics
from edge.sources.averaging import motion_between


def _frame(scene, size: int, number: int) -> Frame:
    fx, fy, cx, cy = scene.intrinsics
    intr = Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=size, height=size, depth_scale=0.001)
    return Frame(rgb=scene.rgb, xyz=scene.xyz, frame_number=number, intrinsics=intr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--sensor", default="d435")
    p.add_argument("--distance", type=float, default=0.55)
    p.add_argument("--category", default="puck")
    args = p.parse_args()
    print("| size | defect | seen, same noise | seen, fresh noise |")
    print("|---|---|---|---|")
    for size in args.sizes:
        for defect in DEFECT_TYPES:
            same = fresh = 0
            for seed in range(args.seeds):
                kw = dict(seed=seed, sensor=args.sensor, distance=args.distance)
                # one seed, one scene: frame 0 of both shares the sensor noise (sample_still)
                good = SceneGenerator(args.category, size, **kw).sample_still("good", 2)
                bad = SceneGenerator(args.category, size, **kw).sample_still(defect, 1)[0]
                same += motion_between(_frame(good[0], size, 0), _frame(bad, size, 1)) is not None
                fresh += motion_between(_frame(good[1], size, 0), _frame(bad, size, 1)) is not None
            print(f"| {size} | {defect} | {same}/{args.seeds} | {fresh}/{args.seeds} |")


if __name__ == "__main__":
    main()
