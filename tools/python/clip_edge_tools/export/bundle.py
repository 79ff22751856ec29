"""A bundle folder around existing ONNX files: the files copied in under their
standard names, the manifest written by clip_edge_tools.manifest, atomically."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import tempfile

from .. import manifest
from ..binary import ClipEdge
from ..errors import ExportError, ManifestError
from ..log import logger
from ..manifest import COMPUTE_FORM, COMPUTE_OWNERS, Preprocess

log = logger("export")


@dataclasses.dataclass
class TextSpec:
    """The text tower to ship: its ONNX file and tokenizer.json, and how to feed it."""
    onnx: pathlib.Path
    tokenizer: pathlib.Path
    context_length: int
    pad_id: int
    attention_mask: bool


def encoder_file(precision: str) -> str:
    return f"image_encoder_{precision}.onnx"


def write_bundle(out: pathlib.Path, *, name: str, description: str, encoders: dict[str, pathlib.Path],
                 preprocess: Preprocess, embed_dim: int, logit_scale: float, text: TextSpec | None,
                 report: dict | None = None, force: bool = False, keep: tuple[str, ...] = (),
                 prompts: str | None = None) -> pathlib.Path:
    """Write a bundle folder around existing ONNX files, atomically.

    `encoders` maps precision ("f32", "f16", "int8", "int8-compute") to an
    image-encoder file; "f32" is required (it defines the model fingerprint),
    and "int8-compute" must be the int8 (or the f32) file itself: it is a way
    of running that file, listed under its name and sha256, not a copy. The
    manifest is made and checked before anything is written; the folder is
    assembled beside `out` and renamed into place at the end. Names in `keep`
    (files or folders of an existing `out`, such as a labels file or a model
    card) are carried over into the new folder. `prompts` names the bundle's
    default prompt store (built afterwards by `clip-edge prompts build`).
    """
    if "f32" not in encoders:
        raise ExportError("the f32 image encoder is required (it defines the model fingerprint)")
    for p in list(encoders.values()) + ([text.onnx, text.tokenizer] if text else []):
        if not pathlib.Path(p).is_file():
            raise ExportError(f"{p}: file does not exist")
    if preprocess.resize not in manifest.RESIZE_MODES:
        raise ExportError(f"resize mode {preprocess.resize!r} is not supported")
    if preprocess.interpolation not in manifest.INTERPOLATIONS:
        raise ExportError(f"interpolation {preprocess.interpolation!r} is not supported")
    if out.exists() and not force:
        raise ExportError(f"{out}: already exists (use --force to replace it)")

    digests = {precision: manifest.sha256(pathlib.Path(src)) for precision, src in encoders.items()}
    entries, copies = [], {}
    for precision, src in sorted(encoders.items()):
        file = encoder_file(precision)
        if precision == COMPUTE_FORM:
            # The int8 (or f32) file itself; if it is neither, the manifest check below refuses it.
            owner = next((p for p in COMPUTE_OWNERS if p in encoders and (
                pathlib.Path(encoders[p]) == pathlib.Path(src) or digests[p] == digests[precision])), None)
            if owner is not None:
                file = encoder_file(owner)
        else:
            copies[file] = pathlib.Path(src)
        entries.append(manifest.Encoder(precision, file, digests[precision]))
    text_entry = None
    if text:
        text_entry = manifest.Text(file="text_encoder.onnx", sha256=manifest.sha256(text.onnx),
                                   tokenizer="tokenizer.json", context_length=text.context_length,
                                   pad_id=text.pad_id, attention_mask=text.attention_mask)
    try:
        doc = manifest.new(name=name, description=description, fingerprint=digests["f32"], prompts=prompts,
                           preprocess=preprocess, embed_dim=embed_dim, logit_scale=logit_scale, encoders=entries,
                           text=text_entry)
    except ManifestError as e:
        raise ExportError(str(e).replace(f"{manifest.MANIFEST_FILE}: ", "", 1)) from e

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for file, src in copies.items():
            shutil.copyfile(src, stage / file)
        if text:
            shutil.copyfile(text.onnx, stage / "text_encoder.onnx")
            shutil.copyfile(text.tokenizer, stage / "tokenizer.json")
        manifest.save(stage, doc)
        if report is not None:
            (stage / "export_report.json").write_text(json.dumps(report, indent=1) + "\n")
        for kept in keep:
            old = out / kept
            if old.is_dir():
                shutil.copytree(old, stage / kept)
            elif old.is_file():
                shutil.copyfile(old, stage / kept)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
        return out
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def add_nnef(binary: ClipEdge, bundle: pathlib.Path) -> None:
    """Adds tract's NNEF form of the bundle's image encoders (`clip-edge bundle
    nnef`: verified against the ONNX files; forms whose NNEF would be larger
    than their ONNX file are skipped). The ONNX files stay the authority, so a
    failure here only costs start-up time on the device: it is logged, not fatal."""
    lines, err = binary.bundle_nnef(bundle)
    for line in lines:
        log(f"nnef: {line}")
    if err:
        log(f"warning: no NNEF form added: {err}")
