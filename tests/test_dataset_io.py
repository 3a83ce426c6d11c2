"""Dataset readers (edge/datasets/dataset_io.py) and the torch Dataset (trainer/data.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from edge.datasets.dataset_io import (
    DatasetError,
    dataset_kind,
    list_samples,
    load_raw,
    read_gt,
    read_png_rgb,
)
from edge.datasets.synthetic import DEFECT_TYPES, write_dataset
from edge.processing.preprocess import PreprocessConfig


@pytest.fixture(scope="module")
def _pristine_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_dataset(
        root,
        categories=("puck",),
        image_size=32,
        n_train=3,
        n_validation=1,
        n_test_good=2,
        n_test_per_defect=1,
        seed=7,
        progress=False,
    )
    return root


@pytest.fixture
def tree(_pristine_tree, tmp_path) -> Path:
    """A private copy of the tiny MVTec-layout tree that a test may damage."""
    return Path(shutil.copytree(_pristine_tree, tmp_path / "data"))


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def eyecandies(tmp_path) -> Path:
    """Preprocessed-Eyecandies layout with 2 train, 1 good test and 1 bad test sample."""
    root = tmp_path / "eye"
    rng = np.random.default_rng(0)
    for split, kind, n in [("train", "good", 2), ("test", "good", 1), ("test", "bad", 1)]:
        for i in range(n):
            d = root / "CandyCane" / split / kind
            _png(d / "rgb" / f"{i:03d}.png", rng.integers(0, 255, (40, 40, 3), np.uint8))
            _png(d / "normals" / f"{i:03d}.png", rng.integers(0, 255, (40, 40, 3), np.uint8))
            _png(d / "depth" / f"{i:03d}.png", rng.integers(0, 65535, (40, 40), np.uint16))
            if split == "test":
                gt = np.zeros((40, 40), np.uint8)
                if kind == "bad":
                    gt[10:20, 10:20] = 255
                _png(d / "gt" / f"{i:03d}.png", gt)
    return root


# ----------------------------------------------------------------------------- MVTec 3D-AD


def test_list_samples_mvtec_layout(tree):
    assert dataset_kind(tree, "puck") == "mvtec3d"
    train = list_samples(tree, "puck", "train")
    assert [r.name for r in train] == ["000", "001", "002"]
    assert all(r.label == 0 and r.defect_type == "good" and r.gt_path is None for r in train)
    assert all(r.geom_path.suffix == ".tiff" and r.kind == "mvtec3d" for r in train)
    test = list_samples(tree, "puck", "test")
    assert sorted({r.defect_type for r in test}) == sorted(("good",) + DEFECT_TYPES)
    for r in test:
        assert r.label == (r.defect_type != "good")
        assert (r.gt_path is not None) == (r.defect_type != "good")
        assert r.split == "test" and r.category == "puck"


def test_load_raw_types_and_missing_points(tree):
    records = list_samples(tree, "puck", "test")
    for r in records:
        raw = load_raw(r)
        assert raw.rgb.shape == (32, 32, 3) and raw.rgb.dtype == np.uint8
        assert raw.xyz.shape == (32, 32, 3) and raw.xyz.dtype == np.float32
        assert raw.normals is None
        if r.label:
            assert raw.gt.dtype == np.uint8 and set(np.unique(raw.gt)) == {0, 255}
        else:
            assert raw.gt is None
    # NaN points (some sensors write them) load as missing (0, 0, 0).
    xyz_path = records[0].geom_path
    xyz = tifffile.imread(xyz_path)
    xyz[5:8, 5:8] = np.nan
    tifffile.imwrite(xyz_path, xyz, photometric="rgb")
    loaded = load_raw(records[0]).xyz
    assert np.isfinite(loaded).all() and np.all(loaded[5:8, 5:8] == 0)


def test_rgb_is_converted_from_bgr(tree):
    r = list_samples(tree, "puck", "train")[0]
    bgr = cv2.imread(str(r.rgb_path))
    np.testing.assert_array_equal(load_raw(r).rgb, bgr[..., ::-1])


def test_missing_category_lists_available(tree):
    with pytest.raises(DatasetError, match=r"'nope'.*available: puck"):
        list_samples(tree, "nope", "train")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_samples(tmp_path / "absent", "puck", "train")


def test_missing_split_lists_available(tree):
    with pytest.raises(DatasetError, match=r"'val'.*available: test, train, validation"):
        list_samples(tree, "puck", "val")


def test_empty_split(tree):
    for p in (tree / "puck" / "validation" / "good" / "rgb").glob("*.png"):
        p.unlink()
    with pytest.raises(DatasetError, match="empty"):
        list_samples(tree, "puck", "validation")


def test_rgb_without_xyz(tree):
    xyz = tree / "puck" / "train" / "good" / "xyz" / "001.tiff"
    xyz.unlink()
    with pytest.raises(DatasetError, match="001.tiff") as info:
        list_samples(tree, "puck", "train")
    assert "001.png" in str(info.value)


def test_missing_gt_for_defect(tree):
    gt = tree / "puck" / "test" / "geometry" / "gt" / "000.png"
    gt.unlink()
    with pytest.raises(DatasetError, match="ground-truth") as info:
        list_samples(tree, "puck", "test")
    assert str(gt) in str(info.value)


def test_xyz_wrong_shape_and_dtype(tree):
    r = list_samples(tree, "puck", "train")[0]
    tifffile.imwrite(r.geom_path, np.zeros((32, 32), np.float32))
    with pytest.raises(DatasetError, match=r"H×W×3") as info:
        load_raw(r)
    assert str(r.geom_path) in str(info.value)
    tifffile.imwrite(r.geom_path, np.zeros((32, 32, 3), np.int16), photometric="rgb")
    with pytest.raises(DatasetError, match="float32"):
        load_raw(r)
    tifffile.imwrite(r.geom_path, np.zeros((16, 16, 3), np.float32), photometric="rgb")
    with pytest.raises(DatasetError, match="RGB resolution"):
        load_raw(r)


def test_corrupt_tiff_and_png(tree):
    r = list_samples(tree, "puck", "train")[0]
    r.geom_path.write_bytes(b"II*\x00garbage")
    with pytest.raises(DatasetError, match="corrupt") as info:
        load_raw(r)
    assert str(r.geom_path) in str(info.value)
    r2 = list_samples(tree, "puck", "train")[1]
    r2.rgb_path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match="corrupt") as info:
        load_raw(r2)
    assert str(r2.rgb_path) in str(info.value)


def test_png_variants(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (8, 9, 3), np.uint8)
    bgra = np.dstack([rgb[..., ::-1], np.full((8, 9), 128, np.uint8)])
    _png(tmp_path / "rgba.png", bgra)
    np.testing.assert_array_equal(read_png_rgb(tmp_path / "rgba.png"), rgb)
    _png(tmp_path / "deep.png", rgb[..., ::-1].astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_png_rgb(tmp_path / "deep.png"), rgb)
    _png(tmp_path / "grey.png", rgb[..., 0])
    assert read_png_rgb(tmp_path / "grey.png").shape == (8, 9, 3)
    mask = np.zeros((8, 9), np.uint16)
    mask[2:4, 2:4] = 1  # 16-bit 0/1 mask
    _png(tmp_path / "gt.png", mask)
    gt = read_gt(tmp_path / "gt.png")
    assert gt.dtype == np.uint8 and gt.sum() == 4 * 255


# ----------------------------------------------------------------------------- Eyecandies


def test_eyecandies_layout(eyecandies):
    assert dataset_kind(eyecandies, "CandyCane") == "eyecandies"
    test = list_samples(eyecandies, "CandyCane", "test")
    assert [(r.defect_type, r.label) for r in test] == [("bad", 1), ("good", 0)]
    assert all(r.kind == "eyecandies" and r.geom_path.parent.name == "normals" for r in test)
    raw = load_raw(test[0])
    assert raw.xyz is None and raw.normals.shape == (40, 40, 3)
    assert raw.gt[15, 15] == 255 and raw.gt[0, 0] == 0


def test_eyecandies_missing_bad_masks_hint(eyecandies):
    shutil.rmtree(eyecandies / "CandyCane" / "test" / "bad" / "gt")
    with pytest.raises(DatasetError, match="test/bad/gt"):
        list_samples(eyecandies, "CandyCane", "test")


def test_unknown_layout(tmp_path):
    (tmp_path / "thing" / "train" / "good" / "rgb").mkdir(parents=True)
    with pytest.raises(DatasetError, match="layout"):
        dataset_kind(tmp_path, "thing")


# ----------------------------------------------------------------------------- torch Dataset


@pytest.mark.parametrize("modality", ["depth", "normal"])
def test_rgbd_dataset_items(tree, modality):
    torch = pytest.importorskip("torch")
    from trainer.data import RGBDDataset, make_loader

    cfg = PreprocessConfig(image_size=32, modality=modality)
    ds = RGBDDataset(list_samples(tree, "puck", "test"), cfg)
    assert len(ds) == 2 + len(DEFECT_TYPES)
    for item in ds:
        assert item["rgb"].shape == (3, 32, 32) and item["rgb"].dtype == torch.float32
        assert item["x3d"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert (item["mask"].sum() > 0) == bool(item["label"])
        assert isinstance(item["defect_type"], str) and isinstance(item["name"], str)
    loader = make_loader(list_samples(tree, "puck", "train"), cfg, batch_size=2, shuffle=True, seed=3)
    batches = list(loader)
    assert batches[0]["rgb"].shape == (2, 3, 32, 32) and len(batches) == 2
    again = list(make_loader(list_samples(tree, "puck", "train"), cfg, batch_size=2, shuffle=True, seed=3))
    assert batches[0]["name"] == again[0]["name"]  # seeded shuffling is reproducible


def test_rgbd_dataset_eyecandies(eyecandies):
    pytest.importorskip("torch")
    from trainer.data import RGBDDataset, make_loader

    records = list_samples(eyecandies, "CandyCane", "test")
    with pytest.raises(ValueError, match="--modality normal"):
        RGBDDataset(records, PreprocessConfig(image_size=32, modality="depth"))
    batch = next(
        iter(make_loader(records, PreprocessConfig(image_size=32)))
    )
    assert batch["x3d"].shape == (2, 3, 32, 32)
    assert batch["label"].tolist() == [1, 0]
