"""trainer/metrics.py: hand-worked AUROC/AP/F1 and PRO cases, agreement with sklearn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from trainer.metrics import (
    METRIC_KEYS,
    aupro,
    compute_metrics,
    f1_max,
    image_ap,
    image_auroc,
    pixel_ap,
    pixel_auroc,
    pro_curve_100,
    pro_curve_exact,
    pro_metrics_100,
    pro_points,
    roc_points,
)

# ----------------------------------------------------------------------------- image level


def test_auroc_perfect_inverted_and_ties():
    y = np.array([0, 0, 1, 1])
    assert image_auroc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert image_auroc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert image_auroc([0.5, 0.5, 0.5, 0.5], y) == 0.5


def test_hand_worked_auroc_ap_f1():
    # scores sorted: 0.9(+) 0.8(-) 0.7(+) 0.1(-)
    s, y = [0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]
    # positive/negative pairs ranked correctly: (.9>.8) (.9>.1) (.7>.1), not (.7>.8) -> 3/4
    assert image_auroc(s, y) == pytest.approx(0.75)
    # AP = sum dR * P = 0.5 * 1 + 0.5 * 2/3
    assert image_ap(s, y) == pytest.approx(0.5 + 1 / 3)
    # thresholds: (P,R) = (1,.5) (.5,.5) (2/3,1) (.5,1); best F1 = 2*(2/3)/(2/3+1) = 0.8
    assert f1_max(s, y) == pytest.approx(0.8, abs=1e-6)


def test_all_ties_ap_is_prevalence_and_f1_at_full_recall():
    s, y = [0.3] * 4, [0, 0, 1, 1]
    assert image_ap(s, y) == pytest.approx(0.5)
    assert f1_max(s, y) == pytest.approx(2 * 0.5 / 1.5, abs=1e-6)


def test_agreement_with_sklearn_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    s = np.round(rng.normal(size=400) + y, 1)  # rounding creates many ties
    assert image_auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert image_ap(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    assert f1_max(s, y) == pytest.approx(np.max((2 * p * r / (p + r + 1e-7))[:-1]), abs=1e-12)


def test_roc_points_start_and_end():
    fpr, tpr = roc_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0.1, np.nan], [0, 1])


# ----------------------------------------------------------------------------- pixel level


def test_pixel_auroc_and_ap():
    maps = np.zeros((2, 4, 4))
    gts = np.zeros((2, 4, 4))
    gts[0, 1:3, 1:3] = 1
    maps[0, 1:3, 1:3] = 1.0
    assert pixel_auroc(maps, gts) == 1.0
    assert pixel_ap(maps, gts) == 1.0
    assert pixel_auroc(-maps, gts) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(maps, gts[:, :3])


# ----------------------------------------------------------------------------- PRO


def _staircase():
    """4x4 map with two GT regions and two 'hot' defect-free pixels.

    R1 = {(0,0), (1,1)}: diagonal neighbours, ONE region with 8-connectivity (size 2),
    scores 0.9 and 0.5. R2 = {(3,3)}: size 1, score 0.7. Defect-free (13 pixels): one at 0.8,
    one at 0.6, eleven at 0.1.
    """
    m = np.full((4, 4), 0.1)
    g = np.zeros((4, 4), np.uint8)
    g[0, 0] = g[1, 1] = g[3, 3] = 1
    m[0, 0], m[1, 1], m[3, 3] = 0.9, 0.5, 0.7
    m[0, 3], m[3, 0] = 0.8, 0.6
    return m[None], g[None]


def test_exact_pro_staircase_by_hand():
    fpr, pro = pro_curve_exact(*_staircase())
    # threshold (score >= t): 0.9 -> R1 half: PRO (0.5+0)/2; 0.8 -> one FP; 0.7 -> R2 found;
    # 0.6 -> second FP; 0.5 -> R1 complete; 0.1 -> everything.
    n = 13
    exp_fpr = [0, 0, 1 / n, 1 / n, 2 / n, 2 / n, 1, 1]
    exp_pro = [0, 0.25, 0.25, 0.75, 0.75, 1, 1, 1]
    np.testing.assert_allclose(fpr, exp_fpr)
    np.testing.assert_allclose(pro, exp_pro)
    # area to 0.3: 0.25/13 + 0.75/13 + 1 * (0.3 - 2/13)
    assert aupro(fpr, pro, 0.3) == pytest.approx((0.3 - 1 / n) / 0.3)


def test_pro_uses_8_connectivity():
    # with 4-connectivity R1 would split in two and the first step would be 1/3, not 1/4
    fpr, pro = pro_curve_exact(*_staircase())
    assert pro[1] == pytest.approx(0.25)


def test_pro_100_staircase_by_hand():
    fpr, pro = pro_curve_100(*_staircase())
    # 13 OK pixels -> positions 0..12 all used; at p: threshold = sorted OK score, pixel counts
    # if score > threshold. p=12 (t=0.8): FPR 0, PRO 0.25; p=11 (t=0.6): FPR 1/13, PRO 0.75;
    # p<=10 (t=0.1): PRO 1.
    n = 13
    assert fpr[0] == 0 and pro[0] == pytest.approx(0.25)
    assert fpr[-1] == 1 and pro[-1] == 1
    x = np.unique(fpr)
    np.testing.assert_allclose(x[:3], [0, 1 / n, 2 / n])
    expected = (0.5 * (0.25 + 0.75) / n + 0.5 * (0.75 + 1) / n + (0.3 - 2 / n)) / 0.3
    assert aupro(fpr, pro, 0.3) == pytest.approx(expected)


def test_region_found_before_any_false_positive_gives_aupro_1():
    m = np.random.default_rng(0).uniform(0, 0.5, size=(2, 16, 16))
    g = np.zeros_like(m)
    g[0, 3:6, 3:9] = 1
    g[1, 10:12, 2:4] = 1
    m[g > 0] = np.linspace(0.6, 1.0, int(g.sum()))
    fpr, pro = pro_curve_exact(m, g)
    for lim in (0.3, 0.1, 0.01):
        assert aupro(fpr, pro, lim) == pytest.approx(1.0)
    assert aupro(*pro_curve_100(m, g), 0.3) == pytest.approx(1.0)


def test_aupro_interpolates_at_the_limit():
    fpr, pro = [0.0, 0.2, 1.0], [0.0, 1.0, 1.0]
    assert aupro(fpr, pro, 0.1) == pytest.approx(0.5 * 0.5 * 0.1 / 0.1)  # y(0.1) = 0.5
    assert aupro(fpr, pro, 0.2) == pytest.approx(0.5)
    assert aupro(fpr, pro, 0.3) == pytest.approx((0.1 + 0.1) / 0.3)
    with pytest.raises(ValueError, match="non-decreasing"):
        aupro([0.0, 0.5, 0.2], [0, 1, 1], 0.1)


def test_exact_and_100_threshold_pro_agree_on_random_case():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(6, 48, 48))
    g = np.zeros_like(m)
    for i in range(4):
        y, x = rng.integers(5, 35, 2)
        g[i, y : y + 8, x : x + 6] = 1
    m = m + 2.0 * g
    f_e, p_e = pro_curve_exact(m, g)
    f_h, p_h = pro_curve_100(m, g)
    assert aupro(f_e, p_e, 0.3) == pytest.approx(aupro(f_h, p_h, 0.3), abs=0.01)
    # at the 100-threshold sample points the curves coincide (up to ties at the threshold)
    np.testing.assert_allclose(np.interp(f_h[1:-1], f_e, p_e), p_h[1:-1], atol=0.02)


def test_pro_points_cut_at_limit():
    fpr, pro = pro_points(*_staircase(), limit=0.3)
    assert fpr[-1] == pytest.approx(0.3) and pro[-1] == pytest.approx(1.0)
    assert np.all(fpr <= 0.3 + 1e-12)


# ----------------------------------------------------------------------------- bundle


def test_compute_metrics_keys_and_values():
    m, g = _staircase()
    maps = np.concatenate([m, np.full((1, 4, 4), 0.1)])
    gts = np.concatenate([g, np.zeros((1, 4, 4), np.uint8)])
    out = compute_metrics([0.9, 0.1], [1, 0], maps, gts)
    assert tuple(out) == METRIC_KEYS
    assert out["image_auroc"] == 1.0
    assert out["aupro@0.3"] == pytest.approx(aupro(*pro_curve_exact(maps, gts), 0.3))
    # the extra good image adds 16 defect-free pixels: the FPR steps are now 1/29
    assert out["aupro@0.3"] == pytest.approx((0.3 - 1 / 29) / 0.3)
    assert out["pixel_auroc"] == pytest.approx(roc_auc_score(gts.ravel(), maps.ravel()))
    json.dumps(out)  # plain floats / None only


def test_compute_metrics_undefined_is_none_not_crash():
    maps = np.random.default_rng(0).random((3, 8, 8))
    out = compute_metrics([0.2, 0.3, 0.1], [0, 0, 0], maps, np.zeros((3, 8, 8)))
    assert tuple(out) == METRIC_KEYS and all(v is None for v in out.values())
    img_only = compute_metrics([0.2, 0.9], [0, 1], None, None)
    assert img_only["image_auroc"] == 1.0 and img_only["pixel_auroc"] is None
    assert pro_metrics_100(maps, np.zeros((3, 8, 8)))["aupro100@0.3"] is None
