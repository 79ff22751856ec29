"""The one bundle.toml writer (clip_edge_tools.manifest) and the bundle writer
built on it (export.bundle.write_bundle): what they write is what the runtime
reads, an int8-compute entry always runs the int8 (or f32) file, edits keep
the rest of a manifest as it was."""

from __future__ import annotations

import pathlib
import shutil
import tomllib

import pytest
from conftest import link_bundle

from clip_edge_tools import manifest
from clip_edge_tools.errors import ExportError, ManifestError
from clip_edge_tools.manifest import COMPUTE_FORM, Encoder, Preprocess
from clip_edge_tools.paths import ROOT

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def small(**overrides):
    args = dict(name="tiny", description="a test", fingerprint=SHA_A,
                preprocess=Preprocess(size=64, resize="squash", interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                                      std=(0.25, 0.25, 0.25)),
                embed_dim=8, logit_scale=100.0,
                encoders=[Encoder("f32", "image_encoder_f32.onnx", SHA_A),
                          Encoder("int8", "image_encoder_int8.onnx", SHA_B),
                          Encoder(COMPUTE_FORM, "image_encoder_int8.onnx", SHA_B)])
    args.update(overrides)
    return manifest.new(**args)


def from_parsed(data: dict, comment: str) -> str:
    """A manifest written by `manifest.new` from another manifest's parsed contents."""
    img, text = data["image"], data.get("text")
    cal = text.get("calibration") if text else None
    doc = manifest.new(
        comment=comment, name=data["name"], description=data.get("description"), fingerprint=data["fingerprint"],
        prompts=data.get("prompts"),
        preprocess=Preprocess(img["size"], img["resize"], img["interpolation"], tuple(img["mean"]), tuple(img["std"])),
        embed_dim=img["embed_dim"], logit_scale=img["logit_scale"], default_precision=img["default_precision"],
        encoders=[Encoder(e["precision"], e["file"], e["sha256"]) for e in img["encoder"]],
        text=manifest.Text(text["file"], text["sha256"], text["tokenizer"], text["context_length"], text["pad_id"],
                           text["attention_mask"]) if text else None,
        calibration=manifest.Calibration(cal["unseen_bonus"], cal["seen_names"]) if cal else None)
    return manifest.dumps(doc)


def test_round_trip_through_a_toml_parser():
    text = manifest.dumps(small(prompts="prompts.store"))
    data = tomllib.loads(text)
    assert list(data) == ["format", "name", "description", "fingerprint", "prompts", "image"]
    assert data["format"] == 1 and data["name"] == "tiny" and data["prompts"] == "prompts.store"
    img = data["image"]
    assert list(img) == ["size", "resize", "interpolation", "mean", "std", "embed_dim", "logit_scale",
                         "default_precision", "encoder"]
    assert (img["size"], img["resize"], img["interpolation"]) == (64, "squash", "bilinear")
    assert img["mean"] == [0.5] * 3 and img["std"] == [0.25] * 3 and img["logit_scale"] == 100.0
    assert [e["precision"] for e in img["encoder"]] == ["f32", "int8", COMPUTE_FORM]
    assert text.startswith("# Written by tools/python/export_bundle.py\nformat = 1\n")
    # Strings the runtime must read back exactly.
    odd = 'quote " backslash \\ tab \t unicode é 🙂'
    assert tomllib.loads(manifest.dumps(small(description=odd)))["description"] == odd


@pytest.mark.parametrize("committed", ["models/emoji/bundle.toml", "tests/data/arch/vit-b-32/bundle.toml",
                                       "tests/data/arch/mobileclip2-s0/bundle.toml",
                                       "tests/data/vit_tiny/bundle.toml"])
def test_new_manifests_are_the_committed_ones_byte_for_byte(committed):
    path = ROOT / committed
    text = path.read_text()
    comment = text.splitlines()[0].removeprefix("# ")
    assert from_parsed(tomllib.loads(text), comment) == text


def test_the_compute_entry_names_the_int8_file_and_repeats_its_sha256():
    doc = small(encoders=[Encoder("f32", "image_encoder_f32.onnx", SHA_A),
                          Encoder("int8", "image_encoder_int8.onnx", SHA_B)])
    entry = manifest.set_compute_form(doc, "int8")
    assert entry == Encoder(COMPUTE_FORM, "image_encoder_int8.onnx", SHA_B)
    encoders = tomllib.loads(manifest.dumps(doc))["image"]["encoder"]
    assert encoders[-1] == {"precision": COMPUTE_FORM, "file": "image_encoder_int8.onnx", "sha256": SHA_B}
    # A new int8 file moves the compute entry along when it is listed again.
    manifest.set_encoder(doc, "int8", "image_encoder_int8.onnx", SHA_C)
    with pytest.raises(ManifestError, match="repeat the sha256"):
        manifest.validate(doc)
    manifest.set_compute_form(doc, "int8")
    manifest.validate(doc)
    assert manifest.encoder(doc, COMPUTE_FORM).sha256 == SHA_C


@pytest.mark.parametrize("file,sha", [("image_encoder_f16.onnx", SHA_C), ("other.onnx", SHA_B)])
def test_a_compute_entry_of_another_file_is_refused(file, sha):
    encoders = [Encoder("f16", "image_encoder_f16.onnx", SHA_C), Encoder("f32", "image_encoder_f32.onnx", SHA_A),
                Encoder("int8", "image_encoder_int8.onnx", SHA_B), Encoder(COMPUTE_FORM, file, sha)]
    with pytest.raises(ManifestError, match="neither the int8 nor the f32 file"):
        small(encoders=encoders)
    with pytest.raises(ManifestError, match="int8 or the f32 file"):
        manifest.set_compute_form(small(), "f16")


def test_the_compute_entry_may_run_the_f32_file_of_a_fixture():
    doc = small(encoders=[Encoder("f32", "image_encoder_f32.onnx", SHA_A),
                          Encoder(COMPUTE_FORM, "image_encoder_f32.onnx", SHA_A)])
    manifest.validate(doc)
    with pytest.raises(ManifestError, match="repeat the sha256"):
        small(encoders=[Encoder("f32", "image_encoder_f32.onnx", SHA_A),
                        Encoder(COMPUTE_FORM, "image_encoder_f32.onnx", SHA_B)])


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.add("extra", 1), "unknown key"),
    (lambda d: d["image"]["encoder"][0].add("nnef", "x.nnef.tar"), "go together"),
    (lambda d: d["image"].__setitem__("default_precision", "f16"), "has no"),
    (lambda d: d["image"]["encoder"][0].__setitem__("file", "../escape.onnx"), "inside the bundle"),
    (lambda d: d["image"]["encoder"][1].__setitem__("precision", "f32"), "listed twice"),
    (lambda d: d["image"]["encoder"][0].__setitem__("sha256", "xyz"), "not a sha256"),
])
def test_what_the_runtime_refuses_is_never_saved(tmp_path, edit, message):
    (tmp_path / "bundle.toml").write_text("untouched\n")
    doc = small()
    edit(doc)
    with pytest.raises(ManifestError, match=message):
        manifest.save(tmp_path, doc)
    assert (tmp_path / "bundle.toml").read_text() == "untouched\n"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.toml"]


def test_edits_keep_comments_layout_and_other_keys(emoji_bundle, test_data_dir):
    text = (emoji_bundle / "bundle.toml").read_text()
    commented = text.replace('[text]\n', '# the text tower: host tools only\n[text]\n').replace(
        'precision = "int8-compute"\n', 'precision = "int8-compute"  # the int8 file on int8 kernels\n')
    assert commented.count("#") == 3
    doc = manifest.parse(commented)
    manifest.set_compute_form(doc, "int8")
    manifest.set_calibration(doc, 0.0125, "seen_names.txt")
    assert manifest.dumps(doc) == commented
    manifest.set_encoder(doc, "int8", "image_encoder_int8.onnx", SHA_C)
    manifest.set_compute_form(doc, "int8")
    assert manifest.dumps(doc) == commented.replace(manifest.encoder(manifest.parse(text), "int8").sha256, SHA_C)

    vit = (test_data_dir / "vit_tiny" / "bundle.toml").read_text()
    doc = manifest.parse(vit)
    manifest.set_calibration(doc, 0.02, "seen.txt")
    assert manifest.dumps(doc) == vit + '\n[text.calibration]\nunseen_bonus = 0.02\nseen_names = "seen.txt"\n'


def test_a_new_file_drops_the_entry_s_stale_nnef_copy():
    doc = small()
    e = doc["image"]["encoder"][0]
    for k, v in (("nnef", "image_encoder_f32.nnef.tar"), ("nnef_sha256", SHA_C), ("nnef_source_sha256", SHA_A)):
        e.add(k, v)
    manifest.set_encoder(doc, "f32", "image_encoder_f32.onnx", SHA_A)
    assert "nnef" in doc["image"]["encoder"][0]
    manifest.set_encoder(doc, "f32", "image_encoder_f32.onnx", SHA_C)
    assert not set(manifest.NNEF_KEYS) & set(doc["image"]["encoder"][0])


def onnx_stub(path: pathlib.Path, content: bytes) -> pathlib.Path:
    path.write_bytes(content)
    return path


def test_write_bundle_lists_the_int8_file_once_for_both_forms(tmp_path):
    from clip_edge_tools.export.bundle import write_bundle

    f32 = onnx_stub(tmp_path / "a.onnx", b"f32 model")
    int8 = onnx_stub(tmp_path / "b.onnx", b"int8 model")
    out = write_bundle(tmp_path / "bundle", name="n", description="d", encoders={"f32": f32, "int8": int8,
                       COMPUTE_FORM: int8}, preprocess=small_preprocess(), embed_dim=8, logit_scale=50.0, text=None)
    data = tomllib.loads((out / "bundle.toml").read_text())
    sha_int8 = manifest.sha256(int8)
    assert data["fingerprint"] == manifest.sha256(f32)
    assert data["image"]["encoder"] == [
        {"precision": "f32", "file": "image_encoder_f32.onnx", "sha256": manifest.sha256(f32)},
        {"precision": "int8", "file": "image_encoder_int8.onnx", "sha256": sha_int8},
        {"precision": COMPUTE_FORM, "file": "image_encoder_int8.onnx", "sha256": sha_int8}]
    assert sorted(p.name for p in out.iterdir()) == ["bundle.toml", "image_encoder_f32.onnx",
                                                     "image_encoder_int8.onnx"]


def test_write_bundle_refuses_a_compute_form_of_its_own_and_writes_nothing(tmp_path):
    from clip_edge_tools.export.bundle import write_bundle

    f32 = onnx_stub(tmp_path / "a.onnx", b"f32 model")
    int8 = onnx_stub(tmp_path / "b.onnx", b"int8 model")
    other = onnx_stub(tmp_path / "c.onnx", b"something else")
    with pytest.raises(ExportError, match="neither the int8 nor the f32 file"):
        write_bundle(tmp_path / "bundle", name="n", description="d",
                     encoders={"f32": f32, "int8": int8, COMPUTE_FORM: other}, preprocess=small_preprocess(),
                     embed_dim=8, logit_scale=50.0, text=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "c.onnx"]


def small_preprocess() -> Preprocess:
    return Preprocess(size=64, resize="shortest-center-crop", interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                      std=(0.5, 0.5, 0.5))


def test_make_arch_fixtures_lists_the_same_compute_entry(tmp_path, test_data_dir):
    pytest.importorskip("numpy", reason="clip_edge_tools.fixtures needs numpy (tools/python/setup_venv.sh)")
    from clip_edge_tools.fixtures.arch import list_compute_form

    for slug in ("vit-b-32", "mobileclip2-s0", "vit-s-16"):
        committed = (test_data_dir / "arch" / slug / "bundle.toml").read_text()
        copy = tmp_path / slug
        copy.mkdir()
        doc = manifest.parse(committed)
        manifest.remove_encoder(doc, COMPUTE_FORM)
        (copy / "bundle.toml").write_text(manifest.dumps(doc))
        assert list_compute_form(copy).file == "image_encoder_f32.onnx"
        assert (copy / "bundle.toml").read_text() == committed
        list_compute_form(copy)  # again: replaced, not added twice
        assert (copy / "bundle.toml").read_text() == committed


def test_the_runtime_reads_a_rewritten_emoji_bundle(tmp_path, emoji_bundle, clip_edge):
    """models/emoji's manifest rewritten by manifest.new from its parsed contents: the
    runtime loads it and every form gives the embeddings the original bundle gives."""
    pytest.importorskip("numpy", reason="the binary bridge's embeddings need numpy (tools/python/setup_venv.sh)")
    files = ["image_encoder_f32.onnx", "image_encoder_int8.onnx", "image_encoder_f16.onnx", "text_encoder.onnx",
             "tokenizer.json", "seen_names.txt", "prompts.store"]
    copy = link_bundle(emoji_bundle, tmp_path / "default", files)
    text = (copy / "bundle.toml").read_text()
    (copy / "bundle.toml").unlink()
    (copy / "bundle.toml").write_text(from_parsed(tomllib.loads(text), "rewritten by the tests"))
    assert tomllib.loads((copy / "bundle.toml").read_text()) == tomllib.loads(text)
    image = emoji_bundle / "samples" / "dog-google.png"
    for precision in ("f32", "int8", COMPUTE_FORM):
        got, err = clip_edge.embed_images(copy, precision, [image])
        want, _ = clip_edge.embed_images(emoji_bundle, precision, [image])
        assert err is None, err
        assert (got == want).all(), precision
    clip_edge.run("prompts", "inspect", copy / "prompts.store", "--bundle", copy)


def test_requantise_refuses_a_bundle_without_int8(tmp_path, emoji_bundle):
    pytest.importorskip("numpy", reason="clip_edge_tools.export needs numpy (tools/python/setup_venv.sh)")
    from types import SimpleNamespace

    from clip_edge_tools.export.cli import requantise

    copy = tmp_path / "default"
    copy.mkdir()
    doc = manifest.load(emoji_bundle)
    manifest.remove_encoder(doc, COMPUTE_FORM)
    manifest.remove_encoder(doc, "int8")
    manifest.save(copy, doc)
    shutil.copyfile(emoji_bundle / "image_encoder_f32.onnx", copy / "image_encoder_f32.onnx")
    with pytest.raises(ExportError, match=r"no \[\[image\.encoder\]\] entry for int8"):
        requantise(SimpleNamespace(bundle=str(copy), int8_mode="weights", clip_edge="/nonexistent/clip-edge"))


def test_the_benchmarks_dynamic_bundle_keeps_only_f32_and_int8(tmp_path, emoji_bundle):
    from clip_edge_tools.bench import dynamic_int8_bundle

    dynamic = onnx_stub(tmp_path / "dynamic.onnx", b"stands for a dynamic int8 file")
    out = dynamic_int8_bundle(emoji_bundle, dynamic, tmp_path / "dyn")
    data = tomllib.loads((out / "bundle.toml").read_text())
    want = tomllib.loads((emoji_bundle / "bundle.toml").read_text())
    assert "text" not in data and "prompts" not in data and data["image"].pop("encoder") == [
        {"precision": "f32", "file": "image_encoder_f32.onnx", "sha256": want["fingerprint"]},
        {"precision": "int8", "file": "image_encoder_int8.onnx", "sha256": manifest.sha256(dynamic)}]
    want["image"].pop("encoder")
    assert data["image"] == want["image"] and data["fingerprint"] == want["fingerprint"]
    assert sorted(p.name for p in out.iterdir()) == ["bundle.toml", "image_encoder_f32.onnx",
                                                     "image_encoder_int8.onnx"]


def test_make_fixture_writes_the_committed_manifest(tmp_path, test_data_dir):
    pytest.importorskip("torch", reason="make_fixture needs torch (tools/python/setup_venv.sh)")
    pytest.importorskip("open_clip", reason="make_fixture needs open_clip (tools/python/setup_venv.sh)")
    import json

    from clip_edge_tools.fixtures import vit_tiny

    src = test_data_dir / "vit_tiny"
    model = json.loads((src / "reference.json").read_text())["model"]
    for name in ("image_encoder_f32.onnx", "text_encoder.onnx"):
        (tmp_path / name).symlink_to(src / name)
    vit_tiny.write_manifest(tmp_path, tmp_path / "image_encoder_f32.onnx", tmp_path / "text_encoder.onnx",
                            model["mean"], model["std"], model["logit_scale"])
    assert (tmp_path / "bundle.toml").read_text() == (src / "bundle.toml").read_text()
