"""Tests of the TRD model (trainer/backbones, tuners, fusion, decoder, model, loss, weights,
complexity) against trd-model.md §2-§8 and §11.

The full-size Wide-ResNet-50-2 model is only ever built on the meta device (shapes and counts,
no memory); real computations use the light resnet18 variant at 64².
"""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.backbones import BACKBONES, Encoder, build_encoder, check_image_size
from trainer.complexity import complexity_table, count_macs, count_parameters
from trainer.decoder import build_decoder
from trainer.fusion import build_fusion
from trainer.loss import branch_loss, branch_loss_terms, global_cosine_distance
from trainer.model import TRD, StudentOutput, anomaly_map
from trainer.tuners import CrossmodalAmplifier, CrossmodalFilter
from trainer.weights import TeacherWeightsError, resolve_teacher_weights

S = 64  # test image side


@pytest.fixture(scope="module")
def r18() -> TRD:
    torch.manual_seed(0)
    return TRD("resnet18").eval()


def _inputs(batch: int = 2, size: int = S, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g), torch.randn(
        batch, 3, size, size, generator=g
    )


# ---------------------------------------------------------------- shapes of every block


@pytest.mark.parametrize(
    ("backbone", "device"),
    [("resnet18", "cpu"), ("resnet18", "meta"), ("wide_resnet50_2", "meta")],
)
def test_block_shapes(backbone: str, device: str) -> None:
    spec = BACKBONES[backbone]
    c1, c2, c3 = spec.channels
    b = 2
    expect = [(b, c1, S // 4, S // 4), (b, c2, S // 8, S // 8), (b, c3, S // 16, S // 16)]
    with torch.device(device):
        enc = Encoder(backbone).eval()
        x = torch.randn(b, 3, S, S)
        feats = enc(x)
        assert [tuple(f.shape) for f in feats] == expect

        filt = CrossmodalFilter(spec.channels).eval()
        amp = CrossmodalAmplifier(spec.channels).eval()
        fused = build_fusion(backbone).eval()
        dec = build_decoder(backbone).eval()
        f_out = filt(feats)
        a_out = amp(feats)
        assert [tuple(t.shape) for t in f_out] == expect
        assert [tuple(t.shape) for t in a_out] == expect
        z = fused(feats, f_out)
        assert tuple(z.shape) == (b, 2 * c3, S // 32, S // 32)
        d_out = dec(z, a_out)
        assert [tuple(t.shape) for t in d_out.blended] == expect
        assert [tuple(t.shape) for t in d_out.plain] == expect

        model = TRD(backbone).eval()
        rgb, x3d = torch.randn(b, 3, S, S), torch.randn(b, 3, S, S)
        t_rgb, t_3d = model.teacher_features(rgb, x3d)
        for name in ("rgb", "3d"):
            out = model.branch(name, t_rgb, t_3d)
            assert isinstance(out, StudentOutput)
            for field in out:
                assert [tuple(t.shape) for t in field] == expect
        maps = model.anomaly_maps(rgb, x3d)
    assert len(maps) == 2
    for m in maps:
        assert tuple(m.shape) == (b, 1, S, S)
        assert m.dtype == torch.float32


def test_filter_hourglass_reaches_one_32nd() -> None:
    # §3: the Filter's narrowest map is 8x8 at 256 input, i.e. S/32 at every level.
    filt = CrossmodalFilter((64, 128, 256))
    for level, (c, hw) in enumerate(zip((64, 128, 256), (S // 4, S // 8, S // 16), strict=True)):
        x = torch.randn(2, c, hw, hw)
        sizes = []
        h = x
        for m in filt.levels[level]:
            h = m(h)
            sizes.append(h.shape[-1])
        assert min(sizes) == S // 32
        assert tuple(h.shape) == tuple(x.shape)
        assert (h >= 0).all()  # BN + ReLU on every step


# ---------------------------------------------------------------- sizes and counts (§3-§6, §11)


def test_wrn_parameter_counts_match_spec() -> None:
    with torch.device("meta"):
        model = TRD("wide_resnet50_2")
    p = count_parameters(model, max_depth=4)
    assert p["teacher"] == 24_862_528
    for b in ("rgb", "3d"):
        s = f"student_{b}"
        assert p[s] == 193_356_806
        assert p[f"{s}.filter"] == 59_794_944
        assert [p[f"{s}.filter.levels.{i}"] for i in range(3)] == [
            22_030_848,
            20_980_736,
            16_783_360,
        ]
        assert p[f"{s}.amplifier"] == 17_905_664
        assert [p[f"{s}.amplifier.levels.{i}"] for i in range(3)] == [
            854_016,
            3_411_968,
            13_639_680,
        ]
        assert p[f"{s}.bottleneck"] == 90_738_688
        assert p[f"{s}.bottleneck.embed"] == 48_263_168
        assert p[f"{s}.decoder"] == 24_917_510
        assert [p[f"{s}.decoder.layer{i}"] for i in (1, 2, 3)] == [
            17_840_128,
            5_317_632,
            1_759_744,
        ]
    assert p["total"] == 24_862_528 + 2 * 193_356_806  # one shared teacher
    assert p["trainable"] == 2 * 193_356_806


def test_wrn_macs_match_spec_within_one_percent() -> None:
    macs = count_macs("wide_resnet50_2", 256)
    expected = {
        "total": 116.5e9,
        "teacher": 2 * 12.00e9,
        "student_rgb": 46.24e9,
        "student_rgb.filter": 6.44e9,
        "student_rgb.amplifier": 10.47e9,
        "student_rgb.bottleneck": 18.19e9,
        "student_rgb.decoder": 11.14e9,
    }
    for part, value in expected.items():
        assert macs[part] == pytest.approx(value, rel=0.01), part
    assert macs["student_3d"] == macs["student_rgb"]


def test_complexity_table_rows_add_up() -> None:
    rows = {r.part: r for r in complexity_table("resnet18", 64)}
    parts = [rows[f"student.{p}"] for p in ("filter", "amplifier", "bottleneck", "decoder")]
    assert rows["one student"].params == sum(r.params for r in parts)
    assert rows["one student"].macs == sum(r.macs for r in parts)
    teacher = next(r for name, r in rows.items() if name.startswith("teacher"))
    assert rows["whole graph"].macs == teacher.macs + 2 * rows["one student"].macs


# ---------------------------------------------------------------- model behaviour


def test_init_follows_reference() -> None:
    torch.manual_seed(0)
    student = TRD("resnet18").student_rgb
    for m in student.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            if m.weight.numel() > 4000:  # enough samples for a stable std estimate
                assert m.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
        elif isinstance(m, nn.ConvTranspose2d):
            # default init: kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in), fan_in from dim 1
            fan_in = m.weight.shape[1] * m.kernel_size[0] * m.kernel_size[1]
            assert m.weight.abs().max().item() <= 1 / math.sqrt(fan_in) + 1e-6
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    dec = student.decoder
    for w in (dec.w_a, dec.w_b, dec.w_c):
        assert torch.equal(w.detach(), torch.ones(2))


def test_decoder_blend_uses_softmax_weights(r18: TRD) -> None:
    rgb, x3d = _inputs()
    t_rgb, t_3d = r18.teacher_features(rgb, x3d)
    dec = r18.student_rgb.decoder
    saved = dec.w_c.detach().clone()
    try:
        with torch.no_grad():
            dec.w_c.copy_(torch.tensor([-30.0, 30.0]))  # softmax -> (0, 1): pure amplifier
            out = r18.branch("rgb", t_rgb, t_3d)
            torch.testing.assert_close(out.blended[0], out.amplified[0])
            dec.w_c.copy_(torch.tensor([30.0, -30.0]))  # softmax -> (1, 0): pure decoder
            out = r18.branch("rgb", t_rgb, t_3d)
            torch.testing.assert_close(out.blended[0], out.plain[0])
            # the blended coarse levels feed the next stage, so plain != blended there
            assert not torch.allclose(out.plain[2], out.blended[2])
    finally:
        with torch.no_grad():
            dec.w_c.copy_(saved)


def test_branches_read_own_and_other_features(r18: TRD) -> None:
    rgb, x3d = _inputs()
    t_rgb, t_3d = r18.teacher_features(rgb, x3d)
    with torch.no_grad():
        out_3d = r18.branch("3d", t_rgb, t_3d)
        # the 3D branch's tuners read the RGB teacher features
        torch.testing.assert_close(out_3d.filtered, r18.student_3d.filter(t_rgb))
        torch.testing.assert_close(out_3d.amplified, r18.student_3d.amplifier(t_rgb))
    # one teacher pass over the concatenated batch == separate passes (teacher in eval)
    torch.testing.assert_close(t_rgb, r18.teacher(rgb))
    torch.testing.assert_close(t_3d, r18.teacher(x3d))
    with pytest.raises(ValueError, match="unknown branch"):
        r18.branch("depth", t_rgb, t_3d)  # type: ignore[arg-type]


def test_teacher_stays_frozen_and_in_eval() -> None:
    torch.manual_seed(0)
    model = TRD("resnet18")
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    assert model.student_rgb.training and model.student_3d.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}

    opt = torch.optim.Adam(model.student_parameters("rgb"), lr=0.005, betas=(0.5, 0.999))
    rgb, x3d = _inputs()
    t_rgb, t_3d = model.teacher_features(rgb, x3d)
    assert all(not t.requires_grad for t in t_rgb + t_3d)
    branch_loss(model.branch("rgb", t_rgb, t_3d), t_rgb).backward()
    opt.step()
    model.train(True)
    assert not model.teacher.training
    for k, v in model.teacher.state_dict().items():  # incl. BN running stats
        assert torch.equal(v, before[k]), k
    model.eval()
    assert not model.student_rgb.training


def test_student_parameters_are_disjoint() -> None:
    torch.manual_seed(0)
    model = TRD("resnet18")
    rgb_ids = {id(p) for p in model.student_parameters("rgb")}
    d_ids = {id(p) for p in model.student_parameters("3d")}
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert rgb_ids and d_ids and not (rgb_ids & d_ids) and not (teacher_ids & (rgb_ids | d_ids))
    assert len(rgb_ids) + len(d_ids) + len(teacher_ids) == len(list(model.parameters()))


@pytest.mark.parametrize("size", [48, 72, 100])
def test_input_size_not_multiple_of_32_is_rejected(r18: TRD, size: int) -> None:
    rgb, x3d = _inputs(size=size)
    with pytest.raises(ValueError, match="multiple of 32"):
        r18.anomaly_maps(rgb, x3d)
    with pytest.raises(ValueError, match="multiple of 32"):
        check_image_size(size, size)


def test_mismatched_or_malformed_inputs_are_rejected(r18: TRD) -> None:
    rgb, _ = _inputs()
    with pytest.raises(ValueError, match="differ in shape"):
        r18.anomaly_maps(rgb, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected \(B, 3, S, S\)"):
        r18.anomaly_maps(rgb[:, :1], rgb[:, :1])


def test_loss_falls_on_tiny_dataset() -> None:
    torch.manual_seed(0)
    model = TRD("resnet18").train()
    opts = {
        b: torch.optim.Adam(model.student_parameters(b), lr=0.005, betas=(0.5, 0.999))
        for b in ("rgb", "3d")
    }
    data = [_inputs(batch=2, seed=s) for s in (10, 11)]  # 4 images in 2 batches
    history: dict[str, list[float]] = {"rgb": [], "3d": []}
    for _epoch in range(3):
        for rgb, x3d in data:
            t_rgb, t_3d = model.teacher_features(rgb, x3d)
            own = {"rgb": t_rgb, "3d": t_3d}
            for b in ("rgb", "3d"):
                loss = branch_loss(model.branch(b, t_rgb, t_3d), own[b])
                assert 0.0 <= loss.item() <= 24.0
                opts[b].zero_grad()
                loss.backward()
                opts[b].step()
                history[b].append(loss.item())
    for b, losses in history.items():
        first, last = np.mean(losses[:2]), np.mean(losses[-2:])
        assert last < 0.8 * first, (b, losses)


# ---------------------------------------------------------------- loss (§7)


def test_global_cosine_distance_matches_definition() -> None:
    g = torch.Generator().manual_seed(3)
    s = [torch.rand(3, 4, 8, 8, generator=g), torch.rand(3, 8, 4, 4, generator=g)]
    t = [torch.rand(3, 4, 8, 8, generator=g), torch.rand(3, 8, 4, 4, generator=g)]
    expected = 0.0
    for sl, tl in zip(s, t, strict=True):
        for i in range(sl.shape[0]):
            a, b = sl[i].double().ravel(), tl[i].double().ravel()
            expected += (1 - a.dot(b) / (a.norm() * b.norm())).item() / sl.shape[0]
    assert global_cosine_distance(s, t).item() == pytest.approx(expected, rel=1e-5)
    # global (not per-pixel) cosine: invariant to a per-sample scale, zero for equal maps
    assert global_cosine_distance([x * 7.0 for x in t], t).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="level 1"):
        global_cosine_distance([s[0][:, :2]], [t[0]])
    with pytest.raises(ValueError, match="number of levels"):
        global_cosine_distance(s, t[:1])


def test_branch_loss_is_sum_of_four_equal_terms() -> None:
    g = torch.Generator().manual_seed(4)
    t = [torch.rand(2, 4, 8, 8, generator=g) + 0.1 for _ in range(3)]
    neg = [-x for x in t]  # cosine -1 -> distance 2 per level -> 6 per term
    out = StudentOutput(filtered=t, amplified=neg, plain=t, blended=neg)
    terms = branch_loss_terms(out, t)
    assert terms["filtered"].item() == pytest.approx(0, abs=1e-6)
    assert terms["amplified"].item() == pytest.approx(6, rel=1e-6)
    assert branch_loss(out, t).item() == pytest.approx(12, rel=1e-6)


# ---------------------------------------------------------------- anomaly maps (§8)


def _reference_maps(model: TRD, rgb: torch.Tensor, x3d: torch.Tensor) -> list[torch.Tensor]:
    """Straightforward per-sample, per-level reference (as the authors' batch-1 code)."""
    result = []
    for i in range(rgb.shape[0]):
        r, d = rgb[i : i + 1], x3d[i : i + 1]
        t_r, t_d = model.teacher(r), model.teacher(d)
        pair = []
        for name, own in (("rgb", t_r), ("3d", t_d)):
            out = model.branch(name, t_r, t_d)
            total = torch.zeros(rgb.shape[-2:], dtype=torch.float64)
            for s, t in zip(out.blended, own, strict=True):
                cos = F.cosine_similarity(s[0], t[0], dim=0, eps=1e-8)  # (H, W)
                m = F.interpolate(
                    (1 - cos)[None, None], size=rgb.shape[-2:], mode="bilinear", align_corners=True
                )
                total += m[0, 0].double()
            pair.append(total)
        result.append(torch.stack(pair))
    return result


def test_anomaly_maps_match_per_sample_reference(r18: TRD) -> None:
    rgb, x3d = _inputs(batch=3)
    with torch.no_grad():
        map_rgb, map_3d = r18.anomaly_maps(rgb, x3d)
        ref = _reference_maps(r18, rgb, x3d)
    for i, pair in enumerate(ref):
        torch.testing.assert_close(map_rgb[i, 0].double(), pair[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(map_3d[i, 0].double(), pair[1], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(map_rgb).all() and (map_rgb >= 0).all()
    assert not torch.allclose(map_rgb[0], map_rgb[1])  # samples are not mixed up


def test_anomaly_map_head_is_fp32_and_overflow_safe() -> None:
    g = torch.Generator().manual_seed(5)
    # 1024 FP16 channels with values ~100: the sum of squares (~1e7) overflows FP16 (max 65504)
    s32 = [torch.rand(2, 1024, 4, 4, generator=g) * 100 + 50]
    t32 = [torch.rand(2, 1024, 4, 4, generator=g) * 100 + 50]
    expected = anomaly_map(s32, t32, (32, 32))
    got = anomaly_map([x.half() for x in s32], [x.half() for x in t32], (32, 32))
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
    # the premise: the squared norm itself is not representable in FP16
    assert torch.isinf((s32[0].half() ** 2).sum(dim=1)).all()


def test_fp16_body_gives_fp32_maps(r18: TRD) -> None:
    rgb, x3d = _inputs()
    half = TRD("resnet18")
    half.load_state_dict(r18.state_dict())
    half = half.half().eval()
    with torch.no_grad():
        want = r18(rgb, x3d)
        got = half(rgb.half(), x3d.half())
    for g_, w in zip(got, want, strict=True):
        assert g_.dtype == torch.float32 and torch.isfinite(g_).all()
        torch.testing.assert_close(g_, w, rtol=0, atol=1e-2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False is the legacy exporter
def test_onnx_export_matches_torch(r18: TRD, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    rgb, x3d = _inputs(batch=2)
    path = tmp_path / "trd.onnx"
    torch.onnx.export(
        r18,
        (rgb, x3d),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["rgb", "x3d"],
        output_names=["map_rgb", "map_3d"],
        dynamic_axes={n: {0: "batch"} for n in ("rgb", "x3d", "map_rgb", "map_3d")},
    )
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rgb3, x3d3 = _inputs(batch=3, seed=7)  # a different batch size than the traced one
    got = sess.run(None, {"rgb": rgb3.numpy(), "x3d": x3d3.numpy()})
    with torch.no_grad():
        want = r18(rgb3, x3d3)
    for g_, w in zip(got, want, strict=True):
        assert g_.shape == tuple(w.shape) and g_.dtype == np.float32
        np.testing.assert_allclose(g_, w.numpy(), rtol=0, atol=1e-4)


# ---------------------------------------------------------------- teacher weights


def test_random_weights_are_deterministic() -> None:
    assert resolve_teacher_weights("random", "resnet18") is None
    torch.manual_seed(123)
    a = TRD("resnet18", teacher_state=None).state_dict()
    torch.manual_seed(123)
    b = TRD("resnet18", teacher_state=None).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _torchvision_like_state(backbone: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = dict(build_encoder(backbone).state_dict())
    # parts a torchvision checkpoint has that the truncated teacher does not build
    state["layer4.0.conv1.weight"] = torch.zeros(1)
    state["fc.weight"] = torch.zeros(1000, 512)
    state["fc.bias"] = torch.zeros(1000)
    return state


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_weights_from_file_load_into_teacher(tmp_path, wrapper: str | None) -> None:
    state = _torchvision_like_state("resnet18", seed=42)
    path = tmp_path / "teacher.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    loaded = resolve_teacher_weights(str(path), "resnet18")
    model = TRD("resnet18", teacher_state=loaded)
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert model.teacher_ignored_keys == ["fc.bias", "fc.weight", "layer4.0.conv1.weight"]


def test_weights_bad_path(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(TeacherWeightsError, match="does not exist"):
        resolve_teacher_weights(str(missing), "resnet18")


def test_weights_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(TeacherWeightsError, match="does not hold a state dict"):
        resolve_teacher_weights(str(path), "resnet18")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherWeightsError, match="not a loadable"):
        resolve_teacher_weights(str(junk), "resnet18")


def test_weights_with_wrong_shapes(tmp_path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(_torchvision_like_state("resnet18"), path)
    with pytest.raises(TeacherWeightsError) as err:
        resolve_teacher_weights(str(path), "wide_resnet50_2")
    msg = str(err.value)
    assert "wide_resnet50_2" in msg and "shape" in msg and "resnet18" in msg
    state = _torchvision_like_state("resnet18")
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(TeacherWeightsError, match="layer2.0.conv1.weight"):
        resolve_teacher_weights(str(path), "resnet18")


def test_imagenet_offline_gives_clear_error(monkeypatch) -> None:
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(TeacherWeightsError) as err:
        resolve_teacher_weights("imagenet", "wide_resnet50_2")
    msg = str(err.value)
    url = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
    assert calls == [url]
    assert url in msg and "wide_resnet50_2-95faca4d.pth" in msg
    assert "--teacher-weights" in msg and "checkpoints" in msg


def test_model_rejects_unfitting_teacher_state() -> None:
    state = _torchvision_like_state("resnet18")
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(TeacherWeightsError, match="layer3.1.bn2.running_var"):
        TRD("resnet18", teacher_state=state)


def test_imagenet_uses_hub_download(monkeypatch) -> None:
    state = _torchvision_like_state("resnet18", seed=9)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: state)
    loaded = resolve_teacher_weights("imagenet", "resnet18")
    assert loaded is not None and torch.equal(loaded["conv1.weight"], state["conv1.weight"])
