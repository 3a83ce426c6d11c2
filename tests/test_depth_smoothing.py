"""Height smoothing before the 3D image (`PreprocessConfig.depth_smoothing`, issue 17): off by
default and then bit-identical; on, it lowers the noise inside the part without pulling the
part's edge towards the zero background."""

from __future__ import annotations

import numpy as np
import pytest

from edge.datasets.synthetic import SceneGenerator
from edge.processing.preprocess import PreprocessConfig, preprocess, smooth_heights


def test_smoothing_lowers_noise_inside_and_keeps_the_edge() -> None:
    rng = np.random.default_rng(0)
    z = np.zeros((64, 64), np.float32)
    z[16:48, 16:48] = 0.5 + rng.normal(0, 0.01, (32, 32)).astype(np.float32)
    out = smooth_heights(z, 2.0)
    inner = (slice(22, 42), slice(22, 42))
    assert out[inner].std() < z[inner].std() / 2.5  # σ=2: ~1/(2·√π·σ) of white noise RMS
    assert np.all(out[z == 0] == 0)  # the background stays background
    # a plain Gaussian would halve the rim (half its support is background); this one does not
    assert np.abs(out[16, 16:48] - 0.5).max() < 0.05
    assert smooth_heights(z, 0.0) is not None and np.array_equal(smooth_heights(z, 0.0), z)


@pytest.mark.parametrize("pipeline", ["reference", "working"])
@pytest.mark.parametrize("modality", ["normal", "depth"])
def test_off_is_the_old_preprocessing_and_on_changes_only_the_3d_image(
    pipeline: str, modality: str
) -> None:
    s = SceneGenerator("puck", 96, seed=2, sensor="d435", distance=0.55).sample("good")
    base = dict(image_size=64, modality=modality, pipeline=pipeline, sobel_ksize=3)
    old = preprocess(s.rgb, s.xyz, PreprocessConfig(**base))
    off = preprocess(s.rgb, s.xyz, PreprocessConfig(**base, depth_smoothing=0.0))
    on = preprocess(s.rgb, s.xyz, PreprocessConfig(**base, depth_smoothing=1.5))
    assert np.array_equal(old.x3d_vis, off.x3d_vis)
    assert np.array_equal(old.rgb_u8, on.rgb_u8)
    assert np.array_equal(old.foreground, on.foreground)
    fg = on.foreground
    diff = np.abs(on.x3d_vis - old.x3d_vis).max(axis=0)
    assert diff[fg].mean() > 1e-3
    # the normals (or heights) inside the part vary less from pixel to pixel once smoothed
    rough = [np.abs(np.diff(p.x3d_vis[0], axis=1))[fg[:, 1:] & fg[:, :-1]].mean()
             for p in (old, on)]
    assert rough[1] < 0.7 * rough[0]


def test_old_manifests_without_the_field_load_with_smoothing_off() -> None:
    cfg = PreprocessConfig(**PreprocessConfig(image_size=64).model_dump(exclude={"depth_smoothing"}))
    assert cfg.depth_smoothing == 0.0
    with pytest.raises(ValueError):
        PreprocessConfig(image_size=64, depth_smoothing=-1.0)


def test_train_cli_records_the_smoothing_in_the_preprocessing() -> None:
    from edge.cli import build_parser
    from trainer.cli import train_config_from_args
    from trainer.train import preprocess_config_for

    base = ["train", "--data-root", "D", "--category", "puck", "--out", "R"]
    argv = [*base, "--depth-smoothing", "1.5"]
    args = build_parser(argv).parse_args(argv)
    assert preprocess_config_for(train_config_from_args(args)).depth_smoothing == 1.5
    args = build_parser(base).parse_args(base)
    assert preprocess_config_for(train_config_from_args(args)).depth_smoothing == 0.0


def test_training_on_camera_data_smooths_fine_grained_noise_only(tmp_path) -> None:
    from edge.datasets.sensors import depth_smoothing_for
    from edge.datasets.synthetic import write_dataset
    from trainer.run import TrainConfig
    from trainer.train import resolve_depth_smoothing

    got = {}
    for sensor, distance in (("d405", 0.2), ("d435", 0.55), ("ideal", 0.55)):
        root = tmp_path / sensor
        write_dataset(root, categories=("puck",), image_size=128, n_train=1, n_validation=0,
                      n_test_good=0, n_test_per_defect=0, seed=0, progress=False,
                      sensor=sensor, distance=distance)
        cfg = TrainConfig(data_root=str(root), category="puck", image_size=128,
                          depth_smoothing=None)
        got[sensor] = resolve_depth_smoothing(cfg).depth_smoothing
        # an explicit value is never replaced
        assert resolve_depth_smoothing(cfg.model_copy(update={"depth_smoothing": 0.7})
                                       ).depth_smoothing == 0.7
    # D405 at 0.2 m: noise correlated over 1.6 px of 128 → smoothed; D435 at 0.55 m: 6.8 px →
    # not; data without a camera record (the ideal sensor writes none) → not
    assert got == {"d405": 3.0, "d435": 0.0, "ideal": 0.0}
    assert depth_smoothing_for(1.6) == 3.0 and depth_smoothing_for(6.8) == 0.0
