"""Build the photo bundle (issue 22) and measure it: `tools/python/build_photo.py`.

Nothing is trained: the image tower is EfficientNet-Lite0 with its ImageNet
weights and the ConSE read-out of tower.py (with its lean to "person", and the
"empty scene" class behind a homogeneity gate whose threshold and cap are
chosen on the validation photographs of validation.py, never on the
evaluation's), the text tower is the emoji bundle's MiniLM-L6 (the same file).
About 15 minutes on 2 cores, 6 of them embedding 80,000 prompts once (cached
under --cache)."""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
from typing import NamedTuple

import numpy as np
import torch

from .. import manifest
from ..binary import ClipEdge
from ..errors import DataMissing, ToolError
from ..log import logger
from ..paths import CACHE, DEFAULT_BUNDLE, EMOJI_BUNDLE
from . import effnet, evaluate, tower, validation

log = logger("photo")

NAME = "clip-edge-photo-efficientnet-lite0"
# The linear-bottleneck projections (1x1 convolutions with no clipping activation after them, written into the
# residual stream) keep f32 weights in the int8 form: with them in int8 the zero-shot top-1 agreed with the
# supervised head on 4.4 points fewer frames (MODEL_CARD.md).
INT8_KEEP_F32 = ("/project/",)
# Beyond those, the weights whose int8 alone moves the validation frames' embeddings most per element stay f32 in the
# int8 form, as long as their f32 bytes fit in this share of the all-int8 file (write_int8; the rule was fixed on the
# validation frames before the evaluation measured it).
INT8_F32_BUDGET = 0.01
# CLIP's (its learned temperature is clamped there). Nothing here could fit it without images: fitted on the class
# prototypes it grows without bound, and the only photographs are the evaluation's.
LOGIT_SCALE = 100.0
# The empty-scene gate's grid (tower.Gate), searched on the validation photographs (choose_empty_scene), and the
# rule, fixed before any gate was measured on the evaluation: the best validation.score among the gates whose
# validation fidelity is at least MIN_VALIDATION_FIDELITY (the 80% and a 5-point margin for the spread
# between validation and evaluation); ties go to the higher fidelity, then to the middle threshold.
GATE_THRESHOLDS = (0.65, 0.675, 0.7, 0.725, 0.75, 0.775, 0.8)
GATE_CAPS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
MIN_VALIDATION_FIDELITY = 0.85


def photo_sources() -> dict[str, tuple[pathlib.Path, str, bool]]:
    """Real photographs that installed PyPI packages ship as sample data:
    name -> (file, licence, shipped as a sample frame). Files whose licence is
    unclear are used for evaluation here (read from the installed package) but
    not copied into the bundle."""
    import matplotlib
    import skimage
    import sklearn

    sk = pathlib.Path(skimage.__file__).parent / "data"
    sl = pathlib.Path(sklearn.__file__).parent / "datasets" / "images"
    mp = pathlib.Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    return {
        "person-astronaut": (sk / "astronaut.png", "public domain (NASA; scikit-image data)", True),
        "person-cameraman": (sk / "camera.png", "CC0 (Lav Varshney; scikit-image data)", True),
        "person-grace_hopper": (mp / "grace_hopper.jpg", "public domain (US Navy; matplotlib sample data)", True),
        "cat-chelsea": (sk / "chelsea.png", "CC0 (Stefan van der Walt; scikit-image data)", True),
        "cup-coffee": (sk / "coffee.png", "CC0 (Rachel Michetti; scikit-image data)", True),
        "rocket-falcon9": (sk / "rocket.jpg", "public domain (SpaceX; scikit-image data)", True),
        "horse-silhouette": (sk / "horse.png", "CC0 (Andreas Preuss; scikit-image data)", True),
        "motorcycle-left": (sk / "motorcycle_left.png", "Middlebury stereo 2014 (scikit-image data); not shipped",
                            False),
        "motorcycle-right": (sk / "motorcycle_right.png", "Middlebury stereo 2014 (scikit-image data); not shipped",
                             False),
        "building-china": (sl / "china.jpg", "CC BY 2.0 (danielbuechele; scikit-learn data); not shipped", False),
        "flower-dahlia": (sl / "flower.jpg", "CC BY 2.0 (vultilion; scikit-learn data); not shipped", False),
        "package-present": (mp / "Minduka_Present_Blue_Pack.png", "openclipart (matplotlib sample data); not shipped",
                            False),
        "empty_scene-brick": (sk / "brick.png", "CC0 (CC0Textures; scikit-image data)", True),
        "empty_scene-grass": (sk / "grass.png", "CC0 (scikit-image data)", True),
        "empty_scene-gravel": (sk / "gravel.png", "CC0 (CC0Textures; scikit-image data)", True),
    }


def label_of(name: str) -> str:
    return name.split("-")[0].replace("_", " ")


def write_samples(folder: pathlib.Path) -> list[pathlib.Path]:
    """The shippable photographs, shortest side 320 px, as JPEG (quality 90)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (src, _lic, ship) in photo_sources().items():
        if not ship:
            continue
        im = Image.open(src).convert("RGB")
        s = 320 / min(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
        dst = folder / f"{name}.jpg"
        im.save(dst, "JPEG", quality=90)
        out.append(dst)
    return out


def build(args) -> dict:
    """The bundle and its report; the validation frames are written once, into a folder that lasts the build."""
    with tempfile.TemporaryDirectory() as val_s:
        return _build(args, pathlib.Path(val_s))


def _build(args, val_dir: pathlib.Path) -> dict:
    from ..export.bundle import write_bundle
    from ..export.onnx_export import export_onnx, fuse_pads_into_convs
    from ..export.quantise import convert_f16_weights
    from ..export.verify import QUANT_MIN_COSINE, unit

    torch.set_num_threads(2)
    bundle = pathlib.Path(args.out)
    if bundle.exists() and not args.force:
        raise DataMissing(f"{bundle}: already exists (use --force to replace it)")
    text_bundle = pathlib.Path(args.text_from)
    text_manifest = manifest.load(text_bundle)
    if args.empty_scene == "auto" and (missing := validation.missing()) is not None:
        raise DataMissing(f"--empty-scene auto needs the validation photographs ({missing}: missing); run "
                          "tools/python/fetch_validation.sh")
    net = effnet.load_pretrained()
    val = validation_set(val_dir, net)

    def progress(n, total):
        if n % 20000 == 0 or n == total:
            log(f"class keys: {n}/{total} prompts embedded")

    keys = tower.class_keys(pathlib.Path(args.cache) / "class_keys.npy", progress)
    tower.check_worn(tower.class_names())
    names = tower.name_keys([tower.PERSON, tower.NULL_NAME])
    binary = ClipEdge.locate(args.clip_edge)
    spec = text_spec(text_bundle, text_manifest)
    labels = labels_for(bundle)
    choice = None
    gate = args.empty_scene
    if gate == "auto":
        choice, gate = choose_empty_scene(binary, net, keys, tower_keys(keys, names, True), spec, labels, val)
    if gate is not None:
        log(f"'{tower.NULL_NAME}': gate threshold {gate.threshold}, cap {gate.cap} (homogeneity)")
    readout_keys = tower_keys(keys, names, gate is not None)
    model = tower.PhotoTower(net, readout_keys, gate).eval()
    alpha = tower.typical_feature_norm(net)
    scale = LOGIT_SCALE
    report: dict = {"model": NAME, "tau": tower.TAU, "feature_norm": alpha, "logit_scale": scale,
                    "empty_scene_gate": None if gate is None else {
                        "threshold": gate.threshold, "cap": gate.cap, "sharpness": tower.SHARPNESS},
                    "empty_scene_choice": choice, "worn_classes": len(tower.WORN)}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        img_f32 = tmp / "image_f32.onnx"
        example = (1, 3, effnet.IMAGE_SIZE, effnet.IMAGE_SIZE)
        export_onnx(model, torch.zeros(example), img_f32, "image")
        log(f"{fuse_pads_into_convs(img_f32, example)} SAME paddings fused into their convolutions")
        encoders = {"f32": img_f32, "f16": tmp / "image_f16.onnx", "int8": tmp / "image_int8.onnx"}
        convert_f16_weights(img_f32, encoders["f16"])
        report["int8_mixed_precision"] = write_int8(img_f32, encoders["int8"], val)
        encoders[manifest.COMPUTE_FORM] = encoders["int8"]
        text, pre = spec
        description = ("clip-edge photo model: EfficientNet-Lite0 (ImageNet-1k weights, 4.7 M parameters, "
                       "0.4 GFLOPs at 224 px) read out into frozen MiniLM-L6 text space (ConSE); see MODEL_CARD.md")
        write_bundle(bundle, name=NAME, description=description, encoders=encoders, preprocess=pre,
                     embed_dim=tower.EMBED_DIM, logit_scale=scale, text=text, force=True,
                     keep=("labels.toml", "MODEL_CARD.md", "README.md"), prompts="prompts.store")
        if (bundle / "samples").exists():
            shutil.rmtree(bundle / "samples")
        samples = write_samples(bundle / "samples")
        reference, err = binary.embed_images(bundle, "f32", samples)
        if reference is None:
            raise ToolError(f"tract cannot run the f32 image encoder of {bundle}: {err}")
        with torch.no_grad():
            torch_ref = np.stack([model(x[None])[0].numpy() for x in effnet.load_frames(samples)])
        report["tract_vs_pytorch_min_cosine"] = float((unit(reference) * unit(torch_ref)).sum(-1).min())
        log(f"f32 in tract vs PyTorch on the samples: min cosine {report['tract_vs_pytorch_min_cosine']:.5f}")
        dropped = []
        for precision in ("f16", "int8", manifest.COMPUTE_FORM):
            emb, err = binary.embed_images(bundle, precision, samples)
            cos = None if emb is None else float((unit(emb) * unit(reference)).sum(-1).mean())
            report[f"{precision}_mean_cosine_to_f32"] = cos
            if err or cos < QUANT_MIN_COSINE:
                log(f"dropping {precision}: {err or f'mean cosine to f32 {cos:.4f}'}")
                dropped.append(precision)
            else:
                log(f"{precision}: tract runs it, mean cosine to f32 {cos:.5f}")
        if dropped:
            encoders = {p: f for p, f in encoders.items() if p not in dropped}
            write_bundle(bundle, name=NAME, description=description, encoders=encoders, preprocess=pre,
                         embed_dim=tower.EMBED_DIM, logit_scale=scale, text=text, force=True,
                         keep=("labels.toml", "MODEL_CARD.md", "README.md", "samples"), prompts="prompts.store")
    if not (bundle / "labels.toml").is_file():
        shutil.copyfile(labels, bundle / "labels.toml")
        log(f"{bundle / 'labels.toml'}: copied from {labels}")
    binary.prompts_build(bundle, bundle / "labels.toml", bundle / "prompts.store")
    report["forms"] = sorted(encoders)
    if not args.skip_eval:
        report["evaluation"] = measure(bundle, binary, net, keys, tower_keys(keys, names, False), gate, alpha,
                                       sorted(encoders), spec, val)
    (bundle / "eval_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {bundle} and {bundle / 'eval_report.json'}")
    return report


def labels_for(bundle: pathlib.Path) -> pathlib.Path:
    """The camera labels the gate is chosen with and the prompt store built from: the bundle's labels.toml, or
    models/default's where the bundle has none (copied into it at the end of the build)."""
    labels = bundle / "labels.toml" if (bundle / "labels.toml").is_file() else DEFAULT_BUNDLE / "labels.toml"
    if not labels.is_file():
        raise DataMissing(f"{labels}: missing (the camera labels the gate is chosen with and the store is built from)")
    return labels


def write_int8(img_f32: pathlib.Path, dst: pathlib.Path, val: Validation | None) -> dict | None:
    """The weight-only int8 form of `img_f32` at `dst`, keeping f32 INT8_KEEP_F32 and, where the validation
    photographs are here, the weights quantise.keep_f32_by_sensitivity picks on them within INT8_F32_BUDGET of the
    all-int8 file; returns the report's record of that choice (None without the photographs)."""
    from ..export.quantise import int8_sensitivity, keep_f32_by_sensitivity, make_int8, output_error

    make_int8(img_f32, dst, "weights", keep_f32=INT8_KEEP_F32)
    if val is None:
        log(f"int8: no validation photographs, so only {INT8_KEEP_F32} stay f32 (the shipped bundle keeps more)")
        return None
    budget = int(INT8_F32_BUDGET * dst.stat().st_size)
    frames = val.inputs.numpy()
    sensitivity = int8_sensitivity(img_f32, frames, INT8_KEEP_F32)
    kept = keep_f32_by_sensitivity(sensitivity, budget)
    out = {"budget_bytes": budget, "kept_f32": kept, "validation_error_all_int8": output_error(img_f32, dst, frames)}
    make_int8(img_f32, dst, "weights", keep_f32=(*INT8_KEEP_F32, *kept))
    out["validation_error"] = output_error(img_f32, dst, frames)
    out["sensitivity"] = sensitivity
    log(f"int8: {len(kept)} more weights stay f32 ({sum(3 * s['elements'] for s in sensitivity if s['node'] in kept)}"
        f" of {budget} bytes); validation mean 1 - cos to f32 {out['validation_error_all_int8']:.2e} -> "
        f"{out['validation_error']:.2e}")
    return out


def tower_keys(keys: torch.Tensor, names: torch.Tensor, empty_scene: bool) -> torch.Tensor:
    """The read-out's keys: the class keys leaning to "person" where worn, and the "empty scene" key last.
    `names`: the keys of tower.PERSON and tower.NULL_NAME (tower.name_keys)."""
    out = tower.lean_to_person(keys, names[0])
    return torch.cat([out, names[1:2]]) if empty_scene else out


def measure(bundle: pathlib.Path, binary: ClipEdge, net: effnet.EfficientNetLite0, keys: torch.Tensor,
            object_keys: torch.Tensor, gate: tower.Gate | None, alpha: float, forms: list[str], spec,
            val: Validation | None) -> dict:
    """`keys`: the 1,000 names' text keys (what is ranked, and the zero-shot classifier of the fidelity
    measure); `object_keys`: the read-out's keys without the "empty scene" row. Held-out prototypes are single
    feature vectors with no spatial map, so the read-out there has no empty-scene class (the gate is meant to be
    shut on object frames; the validation objects' homogeneity is in the report's empty_scene_choice). Where
    the bundle has the gate (`gate`), the same tower without it is measured beside it (`without_empty_scene`);
    `val`: validation_set(), or None where the validation photographs are not fetched."""
    W, b = net.fc.weight.detach(), net.fc.bias.detach()
    out: dict = {"heldout": {}, "fidelity": {}, "photographs": {}}
    out["heldout"]["f32"] = evaluate.heldout(W, b, object_keys, alpha, text=keys)
    # The int8 file stores the classifier per output row and the keys per output column.
    out["heldout"]["int8"] = evaluate.heldout(evaluate.fake_int8(W, 0), b, evaluate.fake_int8(object_keys, 1), alpha,
                                              text=keys)
    out["heldout"]["plain_keys"] = evaluate.heldout(W, b, keys, alpha)
    out["heldout"]["feature_norm_sensitivity"] = {
        f"{a:.1f}": evaluate.heldout(W, b, object_keys, a, text=keys)["top1"] for a in (alpha, 2 * alpha, 4 * alpha)}
    for k, v in out["heldout"].items():
        if "top1" in v:
            log(f"held-out ({k}): top-1 {v['top1']:.3f} ± {v['top1_std']:.3f}, "
                f"top-5 {v['top5']:.3f} ± {v['top5_std']:.3f}")
    sources = photo_sources()
    labelled: dict[str, list[pathlib.Path]] = {}
    for name, (src, _lic, _ship) in sources.items():
        labelled.setdefault(label_of(name), []).append(src)
    with tempfile.TemporaryDirectory() as tmp_s:
        frames = evaluate.camera_views([s[0] for s in sources.values()], pathlib.Path(tmp_s) / "views")
        head = evaluate.head_top1(net, effnet.load_frames(frames))
        for form in forms:
            out["fidelity"][form] = evaluate.fidelity(binary, bundle, form, frames, head, keys)
        out["fidelity"]["frames"] = len(frames)
        log(f"fidelity over {len(frames)} frames: {out['fidelity']}")
        for form in forms:
            r = evaluate.photographs(binary, bundle, form, labelled, bundle / "prompts.store")
            out["photographs"][form] = r
            log(f"photographs ({form}): top-1 {r.get('top1')}")
        out["photographs"]["licences"] = {n: s[1] for n, s in sources.items()}
        if val is not None:
            out["validation"] = validate(binary, bundle, val, keys)
        if gate is not None:
            with tempfile.TemporaryDirectory() as b_s:
                b_dir = experiment_bundle(pathlib.Path(b_s), binary, net, object_keys, None, spec,
                                          bundle / "labels.toml")
                photos = evaluate.photographs(binary, b_dir, "f32", labelled, b_dir / "prompts.store")
                out["without_empty_scene"] = {
                    "photographs_top1": photos.get("top1"),
                    "fidelity": evaluate.fidelity(binary, b_dir, "f32", frames, head, keys),
                    "validation": None if val is None else validate(binary, b_dir, val, keys)}
            log(f"without the empty-scene class: {out['without_empty_scene']}")
    return out


class Validation(NamedTuple):
    """The validation frames: `frames` (validation.frames, label -> files), `files` (all of them, in the order of
    the labels' lists), `inputs` (those preprocessed, effnet.load_frames, stacked) and the supervised head's top-1
    on each (`head`)."""

    frames: dict[str, list[pathlib.Path]]
    files: list[pathlib.Path]
    inputs: torch.Tensor
    head: np.ndarray


def validation_set(folder: pathlib.Path, net: effnet.EfficientNetLite0) -> Validation | None:
    """The validation frames, read and preprocessed once per build, or None, logged, where
    tools/python/fetch_validation.sh has not been run."""
    try:
        frames = validation.frames(folder)
    except DataMissing as e:
        log(f"validation photographs skipped: {e}")
        return None
    files = [f for fs in frames.values() for f in fs]
    inputs = torch.stack(effnet.load_frames(files))
    return Validation(frames, files, inputs, evaluate.head_top1(net, inputs))


def validate(binary: ClipEdge, b_dir: pathlib.Path, val: Validation, keys: torch.Tensor) -> dict:
    """validation.score of the f32 form of `b_dir` on the validation frames (through tract), and its fidelity
    there."""
    r = validation.score(evaluate.photographs(binary, b_dir, "f32", val.frames, b_dir / "prompts.store"))
    r["fidelity"] = evaluate.fidelity(binary, b_dir, "f32", val.files, val.head, keys)
    log(f"validation: score {r['score']:.3f} (empty recall {r['empty_recall']:.3f}, object mean top-1 "
        f"{r['object_mean_top1']:.3f}, top-1 {r['top1']:.3f}, fidelity {r['fidelity']:.3f})")
    return r


def experiment_bundle(tmp: pathlib.Path, binary: ClipEdge, net: effnet.EfficientNetLite0, readout_keys: torch.Tensor,
                      gate: tower.Gate | None, spec, labels: pathlib.Path) -> pathlib.Path:
    """An f32-only bundle of the tower (with the "empty scene" class behind `gate` when given, `readout_keys` then
    ending with its key) and its prompt store over `labels`, written under `tmp`."""
    from ..export.bundle import write_bundle
    from ..export.onnx_export import export_onnx, fuse_pads_into_convs

    text, pre = spec
    onnx_path = tmp / "image_f32.onnx"
    example = (1, 3, effnet.IMAGE_SIZE, effnet.IMAGE_SIZE)
    export_onnx(tower.PhotoTower(net, readout_keys, gate).eval(), torch.zeros(example), onnx_path, "image")
    fuse_pads_into_convs(onnx_path, example)
    b_dir = tmp / "bundle"
    write_bundle(b_dir, name=NAME, description="empty-scene experiment", encoders={"f32": onnx_path},
                 preprocess=pre, embed_dim=tower.EMBED_DIM, logit_scale=LOGIT_SCALE, text=text)
    binary.prompts_build(b_dir, labels, b_dir / "prompts.store")
    return b_dir


def gate_grid(logits: torch.Tensor, homog: torch.Tensor, readout_keys: torch.Tensor, keys: torch.Tensor,
              store: tuple[list[str], np.ndarray], truth: list[str]) -> dict[str, dict]:
    """The tower's read-out in PyTorch for every gate of the grid on frames given by their `logits` and
    homogeneity, classified among the store's rows (labels, unit rows) as `clip-edge eval` does (top cosine):
    validation.score and the fidelity (zero-shot top-1 among `keys` against the head's) of each, keyed by gate."""
    labels, rows = store
    rows_t = torch.tensor(np.asarray(rows), dtype=torch.float32)
    head = logits.argmax(-1)
    out = {}
    for t in GATE_THRESHOLDS:
        for c in GATE_CAPS:
            gate = tower.Gate(t, c)
            emb = tower.readout(logits, readout_keys, tower.TAU, tower.empty_logit(logits, homog, gate)[:, 0])
            pred = [labels[i] for i in (emb @ rows_t.T).argmax(-1).tolist()]
            hits: dict[str, list[bool]] = {}
            for want, got in zip(truth, pred):
                hits.setdefault(want, []).append(want == got)
            per_class = [{"class": k, "n": len(v), "top1": sum(v) / len(v)} for k, v in hits.items()]
            r = validation.score({"per_class": per_class, "top1": sum(map(sum, hits.values())) / len(truth)})
            r["fidelity"] = float(((emb @ keys.T).argmax(-1) == head).float().mean())
            r["threshold"], r["cap"] = t, c
            out[str(gate)] = r
    return out


def pick_gate(grid: dict[str, dict]) -> str | None:
    """The rule of GATE_THRESHOLDS: the best score among gates with fidelity >= MIN_VALIDATION_FIDELITY, ties to
    the higher fidelity, then to the middle threshold (of the tied gates, in grid order); None if none qualifies."""
    ok = {k: v for k, v in grid.items() if v["fidelity"] >= MIN_VALIDATION_FIDELITY}
    if not ok:
        return None
    best = max(v["score"] for v in ok.values())
    tied = [k for k, v in ok.items() if v["score"] >= best - 1e-9]
    top_fid = max(ok[k]["fidelity"] for k in tied)
    tied = [k for k in tied if ok[k]["fidelity"] >= top_fid - 1e-9]
    return tied[(len(tied) - 1) // 2]


def choose_empty_scene(binary: ClipEdge, net: effnet.EfficientNetLite0, keys: torch.Tensor,
                       readout_keys: torch.Tensor, spec, labels: pathlib.Path,
                       val: Validation | None) -> tuple[dict, tower.Gate | None]:
    """`--empty-scene auto`: the gate (or none) chosen by pick_gate on the validation photographs (validation.py;
    never the evaluation's 15), simulated in PyTorch (gate_grid) over the prompt store tract builds from `labels`;
    the chosen gate and the tower without one are then measured through tract there too. `readout_keys` ends
    with the empty-scene key; `keys` are the 1,000 names' (the fidelity's classifier); `val`: validation_set()."""
    from ..default_model.calibrate import read_store

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = pathlib.Path(tmp_s)
        if val is None:
            raise DataMissing("--empty-scene auto needs the validation photographs: run "
                              "tools/python/fetch_validation.sh")
        out["frames"] = {k: len(v) for k, v in val.frames.items()}
        truth = [label for label, fs in val.frames.items() for _ in fs]
        logits, homog = tower.feature_maps(net, val.inputs)
        with tempfile.TemporaryDirectory(dir=tmp) as b_tmp:
            b_dir = experiment_bundle(pathlib.Path(b_tmp), binary, net, readout_keys[:-1], None, spec, labels)
            out["none"] = validate(binary, b_dir, val, keys)
            out["grid"] = gate_grid(logits, homog, readout_keys, keys, read_store(b_dir / "prompts.store"), truth)
        chosen = pick_gate(out["grid"])
        out["chosen"] = chosen
        gate = None if chosen is None else tower.Gate(out["grid"][chosen]["threshold"], out["grid"][chosen]["cap"])
        if gate is not None:
            with tempfile.TemporaryDirectory(dir=tmp) as b_tmp:
                b_dir = experiment_bundle(pathlib.Path(b_tmp), binary, net, readout_keys, gate, spec, labels)
                out["chosen_through_tract"] = validate(binary, b_dir, val, keys)
        out["homogeneity"] = {label: [round(float(h), 4) for h, t in zip(homog, truth) if t == label]
                              for label in val.frames}
    log(f"validation chose the empty-scene gate {chosen}")
    out["licences"] = validation.LICENCES
    return out, gate


def text_spec(text_bundle: pathlib.Path, text_manifest: dict):
    """(TextSpec, Preprocess) of the photo bundle: the text tower of `text_bundle`, EfficientNet's preprocessing."""
    from ..export.bundle import TextSpec

    text = TextSpec(onnx=text_bundle / text_manifest["text"]["file"],
                    tokenizer=text_bundle / text_manifest["text"]["tokenizer"],
                    context_length=text_manifest["text"]["context_length"], pad_id=text_manifest["text"]["pad_id"],
                    attention_mask=text_manifest["text"]["attention_mask"])
    pre = manifest.Preprocess(size=effnet.IMAGE_SIZE, resize="shortest-center-crop", interpolation="bicubic",
                              mean=effnet.MEAN, std=effnet.STD)
    return text, pre


def gate_arg(text: str) -> tower.Gate | str | None:
    """--empty-scene: 'auto', 'none' or THRESHOLD:CAP."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        t, c = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: 'auto', 'none' or THRESHOLD:CAP, e.g. 0.7:0.5") from None
    if not (0.0 < t < 1.0 and 0.0 < c <= 10.0):
        raise argparse.ArgumentTypeError(f"{text}: a threshold between 0 and 1 and a cap in (0, 10], e.g. 0.7:0.5")
    return tower.Gate(t, c)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_BUNDLE), help="bundle folder to write (models/default)")
    p.add_argument("--text-from", default=str(EMOJI_BUNDLE),
                   help="bundle whose MiniLM-L6 text encoder and tokenizer are shipped (models/emoji)")
    p.add_argument("--cache", default=str(CACHE / "photo"), help="cache of the class-name embeddings")
    p.add_argument("--clip-edge", help="clip-edge binary (default: target/debug/clip-edge, built if missing)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--skip-eval", action="store_true", help="write the bundle without the evaluation")
    p.add_argument("--empty-scene", type=gate_arg, metavar="GATE", default="auto",
                   help="the 'empty scene' class: 'auto' (default) behind the homogeneity gate chosen on the "
                        "validation photographs (tools/python/fetch_validation.sh; MODEL_CARD.md); "
                        "THRESHOLD:CAP behind that gate; 'none' leaves it out")
    args = p.parse_args(argv)
    try:
        build(args)
    except (DataMissing, ToolError) as e:
        print(f"build_photo: {e}", file=sys.stderr)
        return 1
    return 0
