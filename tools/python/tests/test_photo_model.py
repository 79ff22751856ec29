"""The photo model's pieces (clip_edge_tools.photo_model, issue 22): TensorFlow
SAME padding, the checkpoint's parameter mapping, the ConSE read-out, the
held-out protocol, the Pad-into-Conv rewrite of exports, the int8 weight
rule and the validation photographs' reader and score. Needs the venv's torch (tools/python/setup_venv.sh)."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from clip_edge_tools.errors import DataMissing  # noqa: E402
from clip_edge_tools.photo_model import effnet, evaluate, tower, validation  # noqa: E402


@pytest.mark.parametrize("size,k,stride,want", [(224, 3, 2, (0, 1)), (56, 5, 2, (1, 2)), (14, 5, 1, (2, 2)),
                                                (7, 3, 1, (1, 1)), (7, 1, 1, (0, 0))])
def test_same_padding_is_tensorflows(size, k, stride, want):
    conv = effnet.SameConv(1, 1, k, stride, size=size)
    assert conv.pad[:2] == want and conv.pad[2:] == want
    out = conv(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == -(-size // stride)


def test_every_checkpoint_tensor_has_one_place_in_the_network():
    net = effnet.EfficientNetLite0()
    ours = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    names = effnet._checkpoint_names()
    assert len(ours) == len(names) == len(set(names))
    assert sum(p.numel() for p in net.parameters()) == 4_652_008


def test_the_readout_is_a_convex_combination_of_the_class_keys():
    keys = torch.nn.functional.normalize(torch.randn(5, tower.EMBED_DIM), dim=-1)
    logits = torch.tensor([[0.0, 0.0, 50.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    e = tower.readout(logits, keys)
    assert torch.allclose(e[0], keys[2], atol=1e-5)
    assert torch.allclose(e[1], torch.nn.functional.normalize(keys.mean(0), dim=-1), atol=1e-5)


def test_the_worn_classes_are_the_names_they_claim_and_only_they_lean_to_person():
    pytest.importorskip("open_clip")
    names = tower.class_names()
    tower.check_worn(names)
    with pytest.raises(tower.DataMissing):
        tower.check_worn(names[1:] + names[:1])
    keys = torch.nn.functional.normalize(torch.randn(1000, tower.EMBED_DIM), dim=-1)
    person = torch.nn.functional.normalize(torch.randn(tower.EMBED_DIM), dim=-1)
    out = tower.lean_to_person(keys, person)
    moved = (out - keys).abs().amax(1) > 1e-6
    assert moved.nonzero().flatten().tolist() == sorted(set(tower.WORN))
    assert torch.allclose(out.norm(dim=-1), torch.ones(1000), atol=1e-5)
    i = tower.WORN[0]
    assert float(out[i] @ person) > float(keys[i] @ person)


def test_the_empty_scene_class_takes_a_frame_no_class_explains_and_leaves_a_confident_one():
    keys = torch.nn.functional.normalize(torch.randn(4, tower.EMBED_DIM), dim=-1)   # 3 classes + empty scene
    logits = torch.tensor([[1.0, 0.5, 0.0], [30.0, 0.0, 0.0]])
    e = tower.readout(logits, keys, null=6.0)
    assert float(e[0] @ keys[3]) > 0.99
    assert float(e[1] @ keys[0]) > 0.99
    net = effnet.EfficientNetLite0(size=32)
    net.fc = torch.nn.Linear(effnet.FEATURES, 3)
    gate = tower.Gate(0.7, 0.5)
    model = tower.PhotoTower(net.eval(), keys, gate)
    x = torch.randn(2, 3, 32, 32)
    logits, homog = tower.feature_maps(net, x)
    want = tower.readout(logits, keys, null=tower.empty_logit(logits, homog, gate)[:, 0])
    assert torch.allclose(torch.nn.functional.normalize(model(x), dim=-1), want, atol=1e-5)
    with pytest.raises(tower.DataMissing):
        tower.PhotoTower(net, keys[:3], gate)


def test_homogeneity_is_one_on_a_uniform_map_low_on_a_lone_object_and_zero_where_features_vanish():
    uniform = torch.rand(1, 16, 1, 1).expand(1, 16, 7, 7)
    lone = torch.zeros(1, 16, 7, 7)
    lone[0, :, 3, 3] = torch.rand(16) + 0.1
    got = tower.homogeneity(torch.cat([uniform, lone]), torch.cat([uniform, lone]).mean((2, 3)))
    assert abs(float(got[0]) - 1.0) < 1e-5 and float(got[1]) < 0.2
    assert float(tower.homogeneity(torch.zeros(1, 16, 7, 7), torch.zeros(1, 16))[0]) == 0.0


def test_the_gate_shuts_below_its_threshold_and_is_capped_above_it():
    logits = torch.tensor([[4.0, 1.0], [4.0, 1.0], [4.0, 1.0]])
    gate = tower.Gate(0.7, 0.5)
    e = tower.empty_logit(logits, torch.tensor([0.5, 0.71, 0.95]), gate)[:, 0]
    assert float(e[0]) == pytest.approx(4.0 - tower.SHARPNESS * 0.2)
    assert float(e[1]) == pytest.approx(4.0 + tower.SHARPNESS * 0.01)
    assert float(e[2]) == pytest.approx(4.5)
    assert str(gate) == "0.7:0.5"


def test_the_gate_rule_wants_fidelity_first_then_score_then_fidelity_then_the_middle():
    from clip_edge_tools.photo_model import build

    def r(score, fid):
        return {"score": score, "fidelity": fid}

    floor = build.MIN_VALIDATION_FIDELITY
    grid = {"0.6:1": r(0.95, floor - 0.01), "0.6:0.5": r(0.8, floor), "0.7:0.5": r(0.8, floor + 0.05),
            "0.8:0.5": r(0.8, floor + 0.05), "0.9:0.5": r(0.8, floor + 0.05), "0.9:0.25": r(0.7, 1.0)}
    assert build.pick_gate(grid) == "0.8:0.5"
    assert build.pick_gate({"0.6:1": r(0.95, floor - 0.01)}) is None
    assert build.gate_arg("0.7:0.5") == tower.Gate(0.7, 0.5) and build.gate_arg("none") is None
    for bad in ("0.7", "1.5:0.5", "0.7:0", "x:y"):
        with pytest.raises(argparse.ArgumentTypeError):
            build.gate_arg(bad)


def test_the_object_free_frames_are_seeded_and_normalised():
    a, b = tower.object_free_frames(8), tower.object_free_frames(8)
    assert a.shape == (8, 3, effnet.IMAGE_SIZE, effnet.IMAGE_SIZE) and torch.equal(a, b)
    assert float(a.min()) >= -1.0 - 1e-6 and float(a.max()) <= 1.0 + 1e-6
    assert float(a[0].std(dim=(1, 2)).max()) < 1e-6 and float(a[2].std(dim=(1, 2)).min()) > 0.01
    assert not torch.equal(a, tower.object_free_frames(8, seed=tower.NULL_SEED + 1))


def test_heldout_ranks_a_perfect_text_first_and_a_useless_one_by_chance():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(1000, 64, generator=g)
    b = torch.zeros(1000)
    # Keys that are the classifier vectors themselves (padded): the read-out of a class's own vector is its key.
    keys = torch.nn.functional.normalize(torch.cat([W, torch.zeros(1000, tower.EMBED_DIM - 64)], 1), dim=-1)
    good = evaluate.heldout(W, b, keys, alpha=20.0)
    assert good["top1"] > 0.9 and good["folds"] == 10 and good["classes_per_fold"] == 100
    shuffled = keys[torch.randperm(1000, generator=g)]
    bad = evaluate.heldout(W, b, shuffled, alpha=20.0)
    assert bad["top5"] < 0.2


def test_fake_int8_keeps_each_slice_within_half_a_step():
    w = torch.randn(8, 300)
    q = evaluate.fake_int8(w, 0)
    step = w.abs().amax(1, keepdim=True) / 127
    assert ((q - w).abs() <= step / 2 + 1e-7).all()
    assert len(torch.unique(q[0] / step[0])) <= 255


def test_pads_fused_into_convolutions_give_the_same_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from clip_edge_tools.export.onnx_export import export_onnx, fuse_pads_into_convs

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = effnet.SameConv(3, 8, 3, 2, size=32)
            self.b = effnet.SameConv(8, 8, 5, 2, groups=8, size=16)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).mean((2, 3))

    path = tmp_path / "two.onnx"
    export_onnx(Two().eval(), torch.zeros(1, 3, 32, 32), path, "image")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"image": x})[0]
    assert fuse_pads_into_convs(path, (1, 3, 32, 32)) == 2
    import onnx
    assert not any(n.op_type == "Pad" for n in onnx.load(str(path)).graph.node)
    after = ort.InferenceSession(str(path)).run(None, {"image": x})[0]
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_int8_weights_keep_the_named_nodes_in_f32(tmp_path):
    import onnx

    from clip_edge_tools.export.onnx_export import export_onnx
    from clip_edge_tools.export.quantise import quantise_int8_weights

    net = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 1))
    src, dst = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    export_onnx(net.eval(), torch.zeros(1, 64, 4, 4), src, "image")
    second = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"][1]
    assert quantise_int8_weights(src, dst, min_elements=1024, keep_f32=(second,)) == 1
    int8 = [i.name for i in onnx.load(str(dst)).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8) == 1


def test_int8_sensitivity_finds_the_weight_whose_rounding_moves_the_output(tmp_path):
    import onnx

    from clip_edge_tools.export.onnx_export import export_onnx
    from clip_edge_tools.export.quantise import int8_sensitivity, keep_f32_by_sensitivity

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 1), torch.nn.Conv2d(64, 64, 1), torch.nn.Flatten())
    with torch.no_grad():
        net[0].weight[:, 0] = 8.0  # one large weight per output channel: a coarse int8 step for the rest
    src = tmp_path / "f32.onnx"
    export_onnx(net.eval(), torch.zeros(1, 64, 2, 2), src, "image")
    convs = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    sens = int8_sensitivity(src, np.random.default_rng(1).standard_normal((8, 64, 2, 2)).astype(np.float32))
    assert [s["node"] for s in sens] == convs and all(s["elements"] == 4096 for s in sens)
    assert sens[0]["error"] > 10 * sens[1]["error"] > 0
    assert keep_f32_by_sensitivity(sens, 3 * 4096) == [convs[0]]
    assert keep_f32_by_sensitivity(sens, 3 * 4096 - 1) == []
    assert keep_f32_by_sensitivity(sens, 10**6) == convs


def test_write_int8_keeps_the_picked_weights_f32_and_records_the_choice(tmp_path, monkeypatch):
    import onnx
    from PIL import Image

    from clip_edge_tools.export.onnx_export import export_onnx
    from clip_edge_tools.photo_model import build

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 16, 1),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    src, dst = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    export_onnx(net.eval(), torch.zeros(1, 3, effnet.IMAGE_SIZE, effnet.IMAGE_SIZE), src, "image")
    rng = np.random.default_rng(2)
    frames = []
    for k in range(3):
        frames.append(tmp_path / f"f{k}.png")
        Image.fromarray(rng.integers(0, 255, (240, 260, 3), dtype=np.uint8)).save(frames[-1])
    assert build.write_int8(src, dst, None) is None  # no validation photographs: the plain int8 form
    plain = sum(i.data_type == onnx.TensorProto.INT8 for i in onnx.load(str(dst)).graph.initializer)
    monkeypatch.setattr(build, "INT8_F32_BUDGET", 1.0)  # room for the 1x1 weight (1,024 values), not for both
    val = build.Validation({"x": frames}, frames, torch.stack(effnet.load_frames(frames)), np.zeros(3))
    record = build.write_int8(src, dst, val)
    convs = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Conv"]
    assert [s["node"] for s in sorted(record["sensitivity"], key=lambda s: -s["error"] / s["elements"])] == convs[::-1]
    assert plain == 2 and record["kept_f32"] == [convs[1]]
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in onnx.load(str(dst)).graph.initializer) == 1
    assert 0 < record["validation_error"] < record["validation_error_all_int8"]


def test_int8_sensitivity_refuses_node_names_that_contain_one_another(tmp_path):
    import onnx

    from clip_edge_tools.errors import ExportError
    from clip_edge_tools.export.onnx_export import export_onnx
    from clip_edge_tools.export.quantise import int8_sensitivity

    net = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 1), torch.nn.Conv2d(64, 64, 1), torch.nn.Flatten())
    src = tmp_path / "f32.onnx"
    export_onnx(net.eval(), torch.zeros(1, 64, 2, 2), src, "image")
    model = onnx.load(str(src))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    convs[0].name, convs[1].name = "/conv", "/conv_b"
    onnx.save(model, str(src))
    with pytest.raises(ExportError, match=r"f32\.onnx: node '/conv_b'"):
        int8_sensitivity(src, np.zeros((1, 64, 2, 2), dtype=np.float32))


def test_the_labels_come_from_the_bundle_or_models_default_and_a_missing_file_is_named(tmp_path, monkeypatch):
    from clip_edge_tools.photo_model import build

    default = tmp_path / "default"
    default.mkdir()
    monkeypatch.setattr(build, "DEFAULT_BUNDLE", default)
    new = tmp_path / "new"
    with pytest.raises(DataMissing, match=r"default/labels\.toml: missing"):
        build.labels_for(new)
    (default / "labels.toml").write_text("")
    assert build.labels_for(new) == default / "labels.toml"
    new.mkdir()
    (new / "labels.toml").write_text("")
    assert build.labels_for(new) == new / "labels.toml"


def test_keep_f32_by_sensitivity_ranks_per_element_and_stops_at_the_first_that_does_not_fit():
    from clip_edge_tools.export.quantise import keep_f32_by_sensitivity

    sens = [{"node": "big", "elements": 1000, "error": 1e-3}, {"node": "small", "elements": 10, "error": 1e-4},
            {"node": "tiny", "elements": 1, "error": 1e-7}]
    assert keep_f32_by_sensitivity(sens, 3 * 10) == ["small"]
    assert keep_f32_by_sensitivity(sens, 3 * 1011) == ["small", "big", "tiny"]
    assert keep_f32_by_sensitivity(sens, 3 * 1000) == ["small"]


def gimp_pattern(w: int, h: int, bpp: int, pixels: bytes, name: bytes = b"test\0") -> bytes:
    import struct

    return struct.pack(">5I", 24 + len(name), 1, w, h, bpp) + b"GPAT" + name + pixels


def test_a_gimp_pattern_reads_back_its_pixels_and_a_bad_one_names_the_file(tmp_path):
    rgb = bytes(range(2 * 3 * 3))
    p = tmp_path / "ok.pat"
    p.write_bytes(gimp_pattern(2, 3, 3, rgb))
    im = validation.read_gimp_pattern(p)
    assert im.size == (2, 3) and im.tobytes() == rgb
    grey = tmp_path / "grey.pat"
    grey.write_bytes(gimp_pattern(2, 2, 1, bytes([0, 85, 170, 255])))
    assert validation.read_gimp_pattern(grey).getpixel((1, 1)) == (255, 255, 255)
    for name, data in [("short.pat", gimp_pattern(2, 3, 3, rgb[:-1])), ("magic.pat", b"x" * 40),
                       ("bpp.pat", gimp_pattern(1, 1, 7, b"1234567")), ("empty.pat", gimp_pattern(0, 3, 3, b""))]:
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(DataMissing, match=name):
            validation.read_gimp_pattern(bad)


def test_the_validation_score_weighs_empty_scenes_and_the_mean_object_label_equally():
    report = {"top1": 0.9, "per_class": [
        {"class": "empty scene", "n": 10, "top1": 0.4}, {"class": "bird", "n": 30, "top1": 1.0},
        {"class": "horse", "n": 1, "top1": 0.0}, {"class": "cat", "n": 0, "top1": 0.0}]}
    s = validation.score(report)
    assert s["object_mean_top1"] == pytest.approx(0.5)
    assert s["score"] == pytest.approx(0.45)
    with pytest.raises(DataMissing, match="empty scene"):
        validation.score({"per_class": [{"class": "bird", "n": 3, "top1": 1.0}]})


def test_the_validation_photographs_are_none_of_the_evaluations_and_use_camera_labels():
    from clip_edge_tools.photo_model import build

    evaluation = {src.resolve() for src, _lic, _ship in build.photo_sources().values()}
    files = [validation.ROOT / f for fs in [*validation.OBJECTS.values(), validation.EMPTY_SCENES] for f in fs]
    assert not evaluation & {f.resolve() for f in files}
    assert len(set(files)) == len(files)
    labels = (pathlib.Path(__file__).resolve().parents[3] / "models/default/labels.toml").read_text()
    for label in [*validation.OBJECTS, validation.EMPTY]:
        assert f'name = "{label}"' in labels, label


def test_missing_validation_photographs_are_named(tmp_path):
    assert validation.missing(tmp_path) is not None
    with pytest.raises(DataMissing, match=r"fetch_validation\.sh"):
        validation.frames(tmp_path / "out", root=tmp_path)


def test_the_gate_grid_scores_each_gate_as_eval_would_on_a_store():
    from clip_edge_tools.photo_model import build

    eye = torch.eye(tower.EMBED_DIM)
    # Classes a and b, and an empty-scene key nearer to a than to b.
    keys = torch.stack([eye[0], eye[1], torch.nn.functional.normalize(eye[2] + 0.5 * eye[0], dim=0)])
    store = (["a", "b", validation.EMPTY], keys.numpy())
    logits = torch.tensor([[8.0, 0.0], [0.0, 8.0], [0.0, 1.0]])
    homog = torch.tensor([0.4, 0.5, 0.95])
    grid = build.gate_grid(logits, homog, keys, keys[:2], store, ["a", "b", validation.EMPTY])
    assert len(grid) == len(build.GATE_THRESHOLDS) * len(build.GATE_CAPS)
    strong = grid[str(tower.Gate(0.7, 2.0))]
    assert strong["score"] == pytest.approx(1.0) and strong["empty_recall"] == 1.0
    # The uniform frame (the head says b) goes to "empty scene", whose key is nearer to a: the names' top-1 agrees
    # with the head on the two objects only.
    assert strong["fidelity"] == pytest.approx(2 / 3)
