"""trainer/report.py: the report writes readable PNGs of sensible size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trainer.report import ROWS_PER_SHEET, ReportSample, build_curves, write_report

S = 32


def _samples(types: list[str]) -> list[ReportSample]:
    rng = np.random.default_rng(0)
    out = []
    for i, t in enumerate(types):
        rgb = np.full((S, S, 3), 0.5)
        gt = np.zeros((S, S))
        fused = rng.normal(0, 0.3, (S, S))
        if t != "good":
            gt[10:16, 12:20] = 1
            fused += 4 * gt
        out.append(
            ReportSample(
                name=f"{i:03d}",
                defect_type=t,
                label=int(t != "good"),
                rgb_vis=rgb,
                x3d_vis=rng.random((S, S, 3)),
                gt=gt,
                fused=fused,
                rgb_map=fused / 2,
                x3d_map=fused / 2,
                score=float(fused.max()),
            )
        )
    return out


def _check_png(path, min_wh=(300, 300)):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = cv2.imread(str(path))
    assert img is not None
    h, w = img.shape[:2]
    assert w >= min_wh[0] and h >= min_wh[1] and w <= 4000 and h <= 4000
    assert img.std() > 5, f"{path} looks blank"


def test_write_report_all_figures(tmp_path):
    types = ["good"] * 4 + ["hole"] * 2 + ["crack"] * 2
    samples = _samples(types)
    maps = {
        "fused": np.stack([s.fused for s in samples]),
        "rgb": np.stack([s.rgb_map for s in samples]),
        "3d": np.stack([s.x3d_map for s in samples]),
    }
    scores = {k: v.max(axis=(1, 2)) for k, v in maps.items()}
    labels = np.array([s.label for s in samples])
    gts = np.stack([s.gt for s in samples])
    curves = build_curves(scores, labels, types, maps, gts)
    assert set(curves["roc"]) == {"fused", "rgb", "3d"} and set(curves["pro"]) == set(maps)
    assert curves["roc"]["fused"].area == pytest.approx(1.0)
    assert list(curves["scores"]) == ["good", "crack", "hole"]

    paths = write_report(tmp_path / "rep", samples, curves, threshold=2.0)
    names = sorted(p.name for p in paths)
    assert names == ["pro.png", "roc.png", "samples_00.png", "samples_01.png", "scores.png"]
    assert len(samples) > ROWS_PER_SHEET  # hence two sheets
    for p in paths:
        assert p.is_file()
        _check_png(p)
    sheet = cv2.imread(str(tmp_path / "rep" / "samples_00.png"))
    assert sheet.shape[0] > sheet.shape[1]  # six rows of panels: portrait


def test_write_report_only_good_samples_and_no_threshold(tmp_path):
    samples = _samples(["good"] * 3)
    scores = {"fused": np.array([s.score for s in samples])}
    curves = build_curves(scores, np.zeros(3), ["good"] * 3)
    assert curves["roc"] == {} and curves["pro"] == {}
    paths = write_report(tmp_path, samples, curves, threshold=None)
    assert sorted(p.name for p in paths) == ["samples_00.png", "scores.png"]
    for p in paths:
        _check_png(p)
