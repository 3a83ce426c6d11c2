"""Edge-preserving depth smoothing (`edge.processing.preprocess.bilateral_heights`,
``PreprocessConfig.depth_filter``) and the noise that sets its range
(`trainer.choices.depth_noise`, `trainer.train.resolve_depth_filter`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.datasets.dataset_io import RawSample
from edge.datasets.synthetic import write_dataset
from edge.processing.geometry import depth_to_xyz
from edge.processing.preprocess import (
    PreprocessConfig,
    bilateral_heights,
    preprocess,
    smooth_heights,
)
from trainer.choices import depth_noise
from trainer.run import TrainConfig
from trainer.train import keep_resumed_choices, resolve_depth_filter

N = 96
STEP = 0.010  # a flange 10 mm high
NOISE = 0.0005


def _flange(seed: int = 0, noise: float = NOISE) -> np.ndarray:
    """Heights (camera distance, m) of a plate whose right part is a 10-mm flange, with a
    hole; pixel-independent noise; 0 = background around it."""
    rng = np.random.default_rng(seed)
    z = np.full((N, N), 0.5, np.float32)
    z[:, 60:] -= STEP
    z += rng.normal(0, noise, z.shape).astype(np.float32)
    z[:8] = 0  # background strip
    yy, xx = np.mgrid[:N, :N]
    z[np.hypot(xx - 30, yy - 50) < 5] = 0  # a hole without returns
    return z


def test_flats_lose_their_noise_steps_and_holes_stay_sharp() -> None:
    z = _flange()
    bil = bilateral_heights(z, 3.0, NOISE)
    gau = smooth_heights(z, 3.0)
    flat = (slice(20, 80), slice(10, 20))
    assert bil[flat].std() < 0.4 * z[flat].std()  # smoothed on the flat
    # beside the step: the Gaussian pulls both sides towards each other, the bilateral does not
    low, high = bil[20:80, 58].mean(), bil[20:80, 61].mean()
    assert low - high > 0.9 * STEP
    assert gau[20:80, 58].mean() - gau[20:80, 61].mean() < 0.6 * STEP
    # background and the hole stay 0 and do not pull the heights beside them
    assert (bil[z == 0] == 0).all()
    assert abs(float(bil[9:12, 10:50].mean()) - 0.5) < 2 * NOISE
    assert abs(float(bil[50, 36:39].mean()) - 0.5) < 2 * NOISE


def test_only_the_parts_box_is_filtered_with_the_frames_result() -> None:
    import cv2

    z = np.zeros((N, N), np.float32)
    part = _flange()[20:60, 30:90]
    for y, x in ((30, 4), (0, 0), (56, 36)):  # inside, in a corner, at the far edges
        z[:] = 0
        z[y:y + 40, x:x + 60] = part
        whole = cv2.bilateralFilter(z, -1, 3 * NOISE, 3.0)
        assert np.array_equal(bilateral_heights(z, 3.0, NOISE), np.where(z != 0, whole, 0))


def test_no_noise_means_nothing_to_smooth() -> None:
    z = _flange(noise=0.0)
    assert np.array_equal(bilateral_heights(z, 3.0, 0.0), z)


def test_the_noise_is_measured_on_the_part() -> None:
    rgb = np.zeros((N, N, 3), np.uint8)
    for noise in (0.0003, 0.001):
        raws = []
        for seed in range(3):
            depth = np.full((N, N), 0.5)
            depth[20:76, 20:76] -= 0.012  # a 12-mm block on the table
            depth += np.random.default_rng(seed).normal(0, noise, depth.shape)
            xyz = depth_to_xyz(depth.astype(np.float32), 500.0, 500.0, N / 2, N / 2)
            raws.append(RawSample(rgb=rgb, xyz=xyz, normals=None, gt=None))
        assert depth_noise(raws) == pytest.approx(noise, rel=0.15)
    assert depth_noise([]) == 0.0


def test_bilateral_is_the_working_pipelines() -> None:
    with pytest.raises(ValueError, match="working pipeline only"):
        PreprocessConfig(pipeline="reference", depth_filter="bilateral")
    assert PreprocessConfig().depth_filter == "gaussian"  # every bundle before it
    assert PreprocessConfig().depth_noise == 0.0
    # what a bundle stores is what the station reads back
    cfg = PreprocessConfig(pipeline="working", depth_smoothing=3.0, depth_filter="bilateral",
                           depth_noise=1.5e-4)
    assert PreprocessConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError, match="greater than or equal"):
        PreprocessConfig(pipeline="working", depth_filter="bilateral", depth_noise=-1.0)


@pytest.fixture(scope="module")
def bracket_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("bracket")
    write_dataset(root, categories=("bracket",), image_size=96, n_train=6, n_validation=2,
                  n_test_good=1, n_test_per_defect=1, seed=3, progress=False)
    return str(root)


def test_training_measures_the_noise_and_records_it(bracket_data, capsys, tmp_path) -> None:
    cfg = TrainConfig(data_root=bracket_data, category="bracket", preprocess="working",
                      image_size=64, depth_smoothing=3.0, depth_filter=None, depth_noise=None)
    done = resolve_depth_filter(cfg)
    assert done.depth_filter == "bilateral"
    assert 1e-5 < done.depth_noise < 5e-3  # the synthetic camera's fraction of a millimetre
    assert "depth smoothing bilateral" in capsys.readouterr().out
    # the station repeats it: the run's preprocessing carries filter and noise
    from trainer.train import preprocess_config_for

    pre = preprocess_config_for(done.model_copy(update={"align": "none"}))
    assert (pre.depth_filter, pre.depth_noise) == ("bilateral", done.depth_noise)
    # no smoothing: nothing measured; the reference pipeline: a Gaussian
    off = resolve_depth_filter(cfg.model_copy(update={"depth_smoothing": 0.0}))
    assert (off.depth_filter, off.depth_noise) == ("bilateral", 0.0)
    ref = resolve_depth_filter(cfg.model_copy(update={"preprocess": "reference"}))
    assert ref.depth_filter == "gaussian"
    with pytest.raises(ValueError, match="working pipeline only"):
        resolve_depth_filter(cfg.model_copy(update={"preprocess": "reference",
                                                    "depth_filter": "bilateral"}))
    # a run recorded before the filter existed resumes with its Gaussian
    old = TrainConfig(data_root=bracket_data, category="bracket", preprocess="working",
                      depth_smoothing=3.0).model_dump(exclude={"depth_filter", "depth_noise"})
    pre = PreprocessConfig(pipeline="working", depth_smoothing=3.0).model_dump(
        exclude={"depth_filter", "depth_noise"})
    (tmp_path / "run.json").write_text(json.dumps({"config": old, "preprocess": pre}))
    resumed = keep_resumed_choices(cfg, tmp_path)
    assert (resumed.depth_filter, resumed.depth_noise) == ("gaussian", 0.0)


def test_the_bracket_keeps_its_flange_sharp(bracket_data) -> None:
    """On a synthetic bracket (a plate with a 10-mm flange and two holes) the bilateral's 3D
    image changes less around the steps than the Gaussian's does, relative to no smoothing."""
    from edge.datasets.dataset_io import list_samples, load_raw

    raw = load_raw(list_samples(bracket_data, "bracket", "train")[0])
    base = PreprocessConfig(pipeline="working", image_size=96, heights="plane")
    none = preprocess(raw.rgb, raw.xyz, base).x3d_vis
    noise = depth_noise([raw])
    gau = preprocess(raw.rgb, raw.xyz, base.model_copy(update={"depth_smoothing": 3.0})).x3d_vis
    bil = preprocess(raw.rgb, raw.xyz, base.model_copy(
        update={"depth_smoothing": 3.0, "depth_filter": "bilateral", "depth_noise": noise})).x3d_vis
    # where the unsmoothed normals tilt strongly (steps, hole walls) the Gaussian widens the
    # tilt into a band; the bilateral keeps it where it was
    tilt = 1.0 - (2 * none[2] - 1)
    steps = tilt > 0.5
    near = (np.abs(2 * gau[2] - 1 - (2 * none[2] - 1)) > 0.3) & ~steps
    near_b = (np.abs(2 * bil[2] - 1 - (2 * none[2] - 1)) > 0.3) & ~steps
    assert near.sum() > 2 * max(near_b.sum(), 1)
