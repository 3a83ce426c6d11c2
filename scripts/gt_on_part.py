"""Where ground-truth defect pixels lie relative to the part region that ``scoring.region: part``
scores (docs/any-shape.md, "Scoring on the part").

For every defective test image of a data set, preprocessed as a run preprocesses it (its
run.json), the mask in the model's frame is compared with the part's foreground as it is and
with its enclosed holes filled (`edge.processing.scoring.fill_holes`, what scoring uses): a
defect pixel outside the region can never score.

    python scripts/gt_on_part.py --run RUN --data-root DATA --category disc
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from tqdm import tqdm

from edge.datasets.dataset_io import list_samples, load_raw
from edge.processing.preprocess import preprocess
from edge.processing.scoring import fill_holes
from trainer.run import read_run_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run directory (its preprocessing is used)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--category", required=True)
    a = ap.parse_args()
    pre = read_run_info(a.run).preprocess
    # per defect type: gt pixels, outside the foreground, outside the filled region, pixels added
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    records = [r for r in list_samples(a.data_root, a.category, "test") if r.label == 1]
    for r in tqdm(records, desc=a.category, leave=False):
        raw = load_raw(r)
        if raw.gt is None:
            continue
        p = preprocess(raw.rgb, raw.xyz, pre)
        gt = p.mask_to_model(raw.gt) > 0.5
        fg = p.foreground
        part = fill_holes(fg)
        c = counts[r.defect_type]
        c[0] += int(gt.sum())
        c[1] += int((gt & ~fg).sum())
        c[2] += int((gt & ~part).sum())
        c[3] += int((part & ~fg).sum())
    print("| category | defect type | gt pixels | outside the foreground | outside the part "
          "(holes filled) | pixels filling adds |")
    print("|---|---|---|---|---|---|")
    for t, (n, out_fg, out_part, added) in sorted(counts.items()):
        n = max(n, 1)
        print(f"| {a.category} | {t} | {n} | {out_fg / n:.1%} | {out_part / n:.1%} | {added} |")


if __name__ == "__main__":
    main()
