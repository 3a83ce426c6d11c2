"""Offline teachers: BN recalibration, fractal generator, fractal pretraining and its CLI."""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest
import torch

from trainer.backbones import Encoder
from trainer.model import TRD
from trainer.pretrain import (
    add_pretrain_teacher_args,
    offline_teacher_path,
    pretrain_teacher,
    recalibrate_bn,
    recalibrate_teacher,
    run_pretrain_teacher,
    save_teacher,
    wants_bn_recalibration,
)
from trainer.procedural import ProceduralImages, sample_categories
from trainer.weights import TeacherWeightsError, resolve_teacher_weights

TINY = dict(steps=2, image_size=32, batch_size=4, n_classes=3, progress=False)


def _encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder("resnet18")


def test_recalibrate_bn_sets_stats_to_data_moments():
    enc = _encoder()
    weights_before = {
        k: v.clone()
        for k, v in enc.state_dict().items()
        if "running" not in k and "num_batches" not in k
    }
    g = torch.Generator().manual_seed(1)
    batches = [3.0 + 2.0 * torch.randn(4, 3, 32, 32, generator=g) for _ in range(3)]
    assert torch.all(enc.bn1.running_mean == 0) and torch.all(enc.bn1.running_var == 1)

    assert recalibrate_bn(enc, batches) == 3

    with torch.no_grad():
        acts = [enc.conv1(x) for x in batches]
    # cumulative average of per-batch moments (unbiased variance, as BatchNorm tracks it)
    mean = torch.stack([a.mean(dim=(0, 2, 3)) for a in acts]).mean(0)
    var = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in acts]).mean(0)
    torch.testing.assert_close(enc.bn1.running_mean, mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(enc.bn1.running_var, var, rtol=1e-4, atol=1e-4)
    # deeper layers changed too, weights did not, and the teacher is back in eval mode
    assert not torch.allclose(enc.layer3[1].bn2.running_var, torch.ones(256))
    for k, v in enc.state_dict().items():
        if k in weights_before:
            assert torch.equal(v, weights_before[k]), k
    assert not enc.training
    assert all(m.momentum == 0.1 for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_recalibrated_features_are_normalised_on_the_data():
    """After recalibration, bn1's eval-mode output is ~zero-mean, unit-variance per channel."""
    enc = _encoder()
    g = torch.Generator().manual_seed(2)
    x = 0.5 + 3.0 * torch.randn(16, 3, 32, 32, generator=g)
    recalibrate_bn(enc, [x])
    with torch.no_grad():
        y = enc.bn1(enc.conv1(x))
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (y.var(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


def test_recalibrate_bn_rejects_empty_input():
    with pytest.raises(ValueError, match="no input batches"):
        recalibrate_bn(_encoder(), [])
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_bn(torch.nn.Conv2d(3, 3, 1), [torch.zeros(1, 3, 4, 4)])


def test_procedural_images_shapes_range_and_determinism():
    a = ProceduralImages(n_classes=4, image_size=32, seed=3)
    x, y = a.batch(6)
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.float32
    assert y.shape == (6,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.std() > 0.05
    assert set(y.tolist()) <= set(range(4))
    x2, y2 = ProceduralImages(n_classes=4, image_size=32, seed=3).batch(6)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = ProceduralImages(n_classes=4, image_size=32, seed=4).batch(6)
    assert not np.array_equal(x, x3)


def test_fractal_categories_are_contractive_and_distinct():
    cats = sample_categories(3, seed=0, size=32)
    assert len(cats) == 3
    for c in cats:
        assert np.linalg.svd(c.maps[:, :, :2], compute_uv=False).max() < 1.0
        assert c.probs.sum() == pytest.approx(1.0)
    assert not np.array_equal(cats[0].maps, cats[1].maps)
    with pytest.raises(ValueError):
        sample_categories(0, seed=0)


def test_pretrain_is_deterministic_and_changes_weights():
    a = pretrain_teacher(seed=5, **TINY).state_dict
    b = pretrain_teacher(seed=5, **TINY).state_dict
    c = pretrain_teacher(seed=6, **TINY).state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())
    assert not any(k.startswith(("layer4.", "fc.", "head.")) for k in a)


def test_pretrained_file_loads_as_teacher_weights(tmp_path):
    res = pretrain_teacher(seed=0, **TINY)
    path = save_teacher(tmp_path / "t.pth", res.state_dict, {"seed": 0})
    state = resolve_teacher_weights(str(path), "resnet18")
    model = TRD("resnet18", teacher_state=state)
    for k, v in res.state_dict.items():
        assert torch.equal(model.teacher.state_dict()[k], v), k
    assert json.loads((tmp_path / "t.pth.json").read_text())["seed"] == 0


def test_cli_handler_writes_weights_and_provenance(tmp_path, capsys):
    parser = add_pretrain_teacher_args(argparse.ArgumentParser())
    out = tmp_path / "sub" / "teacher.pth"
    args = parser.parse_args(
        [
            "--out",
            str(out),
            "--steps",
            "2",
            "--image-size",
            "32",
            "--batch-size",
            "4",
            "--classes",
            "3",
            "--seed",
            "1",
        ]
    )
    args.progress = False
    assert run_pretrain_teacher(args) == 0
    assert resolve_teacher_weights(str(out), "resnet18") is not None
    prov = json.loads(out.with_name("teacher.pth.json").read_text())
    assert prov["steps"] == 2 and prov["seed"] == 1 and prov["backbone"] == "resnet18"
    assert "pretrain-teacher" in prov["command"]
    assert str(out) in capsys.readouterr().out


def test_cli_rejects_bad_image_size():
    with pytest.raises(ValueError, match="multiple of 32"):
        pretrain_teacher(image_size=48, steps=1, progress=False)


def test_bn_recalibration_policy():
    assert wants_bn_recalibration("random", "resnet18")
    assert wants_bn_recalibration("/x/fractal_teacher.pth", "resnet18")
    assert not wants_bn_recalibration("imagenet", "resnet18")
    assert not wants_bn_recalibration("/cache/resnet18-f37072fd.pth", "resnet18")


def test_recalibrate_teacher_uses_both_modalities_and_spares_students():
    torch.manual_seed(0)
    model = TRD("resnet18")
    students = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("teacher.")}
    g = torch.Generator().manual_seed(3)
    rgb = torch.randn(2, 3, 32, 32, generator=g)
    x3d = 5.0 + torch.randn(2, 3, 32, 32, generator=g)
    assert recalibrate_teacher(model, [{"rgb": rgb, "x3d": x3d}], "cpu") == 1
    with torch.no_grad():
        expected = model.teacher.conv1(torch.cat([rgb, x3d])).mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.teacher.bn1.running_mean, expected, rtol=1e-4, atol=1e-4)
    for k, v in model.state_dict().items():
        if k in students:
            assert torch.equal(v, students[k]), k


def test_shipped_offline_teacher_loads_with_provenance():
    path = offline_teacher_path("resnet18")
    prov = json.loads(path.with_suffix(".json").read_text())
    assert prov["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["backbone"] == "resnet18" and "pretrain-teacher" in prov["command"]
    state = resolve_teacher_weights("offline", "resnet18")
    model = TRD("resnet18", teacher_state=state)
    w = model.teacher.conv1.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, state["conv1.weight"].float())
    # trained, not a fresh init: the running statistics are no longer 0 / 1
    assert not torch.allclose(model.teacher.bn1.running_var, torch.ones(64))


def test_offline_teacher_missing_backbone_is_a_clear_error():
    with pytest.raises(TeacherWeightsError, match="pretrain-teacher"):
        resolve_teacher_weights("offline", "wide_resnet50_2")
