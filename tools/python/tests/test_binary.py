"""The bridge to the clip-edge binary (clip_edge_tools.binary) on the committed
fixture: texts and images embedded through tract as the reference says."""

from __future__ import annotations

import json

import pytest

np = pytest.importorskip("numpy", reason="needs numpy (tools/python/setup_venv.sh)")


def cosines(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def test_texts_embed_as_onnx_runtime_does(clip_edge, test_data_dir):
    bundle = test_data_dir / "vit_tiny"
    prompts = json.loads((bundle / "reference.json").read_text())["prompts"]
    got, err = clip_edge.embed_texts(bundle, [p["text"] for p in prompts])
    assert err is None, err
    want = np.array([p["onnxruntime"] for p in prompts])
    assert got.shape == want.shape
    assert cosines(got, want).min() > 0.9999


def test_images_embed_as_onnx_runtime_does(clip_edge, test_data_dir):
    bundle = test_data_dir / "vit_tiny"
    images = [e for e in json.loads((bundle / "reference.json").read_text())["images"] if e["mode"] == "RGB"]
    got, err = clip_edge.embed_images(bundle, "f32", [test_data_dir / e["file"] for e in images])
    assert err is None, err
    assert cosines(got, np.array([e["onnxruntime"] for e in images])).min() > 0.9999


def test_a_missing_form_is_an_error_message_not_an_exception(clip_edge, test_data_dir):
    got, err = clip_edge.embed_images(test_data_dir / "vit_tiny", "int8", [test_data_dir / "images" /
                                                                           "checker_224x224.png"])
    assert got is None and "int8" in err


def test_int8_compute_layers_are_reported(clip_edge, emoji_bundle):
    layers = clip_edge.int8_layers(emoji_bundle, emoji_bundle / "samples" / "dog-google.png")
    assert layers and {"name", "compute"} <= set(layers[0])
    assert any(str(layer["compute"]).startswith("int8") for layer in layers)


def test_locate_takes_an_explicit_binary_and_never_builds_a_missing_one(tmp_path):
    from clip_edge_tools.binary import ClipEdge
    from clip_edge_tools.errors import ToolError

    with pytest.raises(ToolError, match="no clip-edge binary"):
        ClipEdge.locate(tmp_path / "clip-edge")
    fake = tmp_path / "clip-edge"
    fake.write_text("#!/bin/sh\necho 'error: broken' >&2\nexit 1\n")
    fake.chmod(0o755)
    binary = ClipEdge.locate(fake)
    assert binary.path == fake
    assert binary.embed_images(tmp_path, "f32", []) == (None, "error: broken")
    with pytest.raises(ToolError, match="broken"):
        binary.prompts_random(tmp_path, tmp_path / "x.store")


def test_eval_and_prompts_build_on_the_emoji_model(clip_edge, emoji_bundle, tmp_path):
    import shutil

    for label in ("dog", "cat"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for sample in emoji_bundle.glob(f"samples/{label}-*.png"):
            shutil.copyfile(sample, tmp_path / "data" / label / sample.name)
    labels = tmp_path / "labels.toml"
    labels.write_text('[[class]]\nname = "dog"\n\n[[class]]\nname = "cat"\n\n[[class]]\nname = "car"\n')
    store = tmp_path / "three.store"
    clip_edge.prompts_build(emoji_bundle, labels, store, calibration=False)
    report = clip_edge.eval(emoji_bundle, tmp_path / "data", store, precision="int8")
    assert (report["n"], report["classes"], report["candidates"]) == (4, 2, 3)
    assert report["top1"] == 1.0
