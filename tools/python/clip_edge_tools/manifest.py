"""The one reader and writer of `bundle.toml` (docs/bundle.md; the runtime's
reader is runtime/src/bundle.rs, which refuses unknown keys).

Every tool that writes or edits a manifest goes through here, on tomlkit
documents:

- `new()` makes a manifest in the layout the docs show (keys in the runtime's
  order, one blank line between tables, a `# Written by ...` header);
- the editors (`set_encoder`, `remove_encoder`, `set_compute_form`,
  `set_calibration`, `remove_text`, `remove_nnef`, ...) change only what they name, so an
  existing manifest keeps its comments, its layout and every other key, as the
  runtime's own `clip-edge bundle nnef` does with toml_edit;
- `save()` checks the document with `validate()` (the runtime's rules, plus:
  an `int8-compute` entry names the int8 or f32 file and repeats its sha256)
  and replaces the file atomically, so nothing the runtime would refuse is
  ever written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib
import re
import tempfile
from collections.abc import Iterable
from typing import Any

import tomlkit
from tomlkit.items import AoT, Null, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from .errors import ManifestError

MANIFEST_FILE = "bundle.toml"
FORMAT = 1
HEADER = "Written by tools/python/export_bundle.py"
PRECISIONS = ("f32", "f16", "int8", "int8-compute")
# The int8 file run on tract's int8 kernels (runtime/src/int8/): no file of its
# own; its entry names the int8 file (or, for the test fixtures, the f32 one).
COMPUTE_FORM = "int8-compute"
COMPUTE_OWNERS = ("int8", "f32")
RESIZE_MODES = ("shortest-center-crop", "squash")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
NNEF_KEYS = ("nnef", "nnef_sha256", "nnef_source_sha256")
MAX_UNSEEN_BONUS = 0.5

_TOP_KEYS = {"format", "name", "description", "fingerprint", "prompts", "image", "text"}
_IMAGE_KEYS = {"size", "resize", "interpolation", "mean", "std", "embed_dim", "logit_scale", "default_precision",
               "encoder"}
_ENCODER_KEYS = {"precision", "file", "sha256", *NNEF_KEYS}
_TEXT_KEYS = {"file", "sha256", "tokenizer", "context_length", "pad_id", "attention_mask", "calibration"}
_CALIBRATION_KEYS = {"unseen_bonus", "seen_names"}
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    size: int
    resize: str              # "shortest-center-crop" | "squash"
    interpolation: str       # "bicubic" | "bilinear" | "nearest"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Encoder:
    """One `[[image.encoder]]` entry: a precision, a file inside the bundle, its sha256."""
    precision: str
    file: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class Text:
    """The `[text]` table (host tools only)."""
    file: str
    sha256: str
    tokenizer: str
    context_length: int
    pad_id: int
    attention_mask: bool


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The `[text.calibration]` table: the seen/unseen bonus (docs/bundle.md)."""
    unseen_bonus: float
    seen_names: str


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- building

def _table(values: Iterable[tuple[str, Any]]) -> Table:
    t = tomlkit.table()
    for k, v in values:
        t.add(k, v)
    return t


def _encoder_table(e: Encoder) -> Table:
    return _table([("precision", e.precision), ("file", e.file), ("sha256", e.sha256)])


def _calibration_table(c: Calibration) -> Table:
    return _table([("unseen_bonus", float(c.unseen_bonus)), ("seen_names", c.seen_names)])


def new(*, name: str, fingerprint: str, preprocess: Preprocess, embed_dim: int, logit_scale: float,
        encoders: Iterable[Encoder], description: str | None = None, prompts: str | None = None,
        text: Text | None = None, calibration: Calibration | None = None, default_precision: str = "f32",
        comment: str | None = HEADER) -> TOMLDocument:
    """A complete manifest, validated. Encoders are listed in the order given."""
    doc = tomlkit.document()
    if comment:
        for line in comment.splitlines():
            doc.add(tomlkit.comment(line))
    doc.add("format", FORMAT)
    doc.add("name", name)
    if description is not None:
        doc.add("description", description)
    doc.add("fingerprint", fingerprint)
    if prompts:
        doc.add("prompts", prompts)
    image = _table([
        ("size", int(preprocess.size)),
        ("resize", preprocess.resize),
        ("interpolation", preprocess.interpolation),
        ("mean", [float(v) for v in preprocess.mean]),
        ("std", [float(v) for v in preprocess.std]),
        ("embed_dim", int(embed_dim)),
        ("logit_scale", float(logit_scale)),
        ("default_precision", default_precision),
    ])
    entries = tomlkit.aot()
    for e in encoders:
        entries.append(_encoder_table(e))
    image.add("encoder", entries)
    doc.add("image", image)
    if text is not None:
        t = _table([("file", text.file), ("sha256", text.sha256), ("tokenizer", text.tokenizer),
                    ("context_length", int(text.context_length)), ("pad_id", int(text.pad_id)),
                    ("attention_mask", bool(text.attention_mask))])
        if calibration is not None:
            t.add("calibration", _calibration_table(calibration))
        doc.add("text", t)
    elif calibration is not None:
        raise ManifestError("[text.calibration] needs a [text] table")
    validate(doc)
    return doc


# ---------------------------------------------------------------- reading

def parse(text: str, where: str = MANIFEST_FILE) -> TOMLDocument:
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        raise ManifestError(f"{where}: not valid TOML: {e}") from e


def load(bundle: pathlib.Path) -> TOMLDocument:
    """The manifest of a bundle folder (or a bundle.toml path), as an editable document."""
    path = _manifest_path(bundle)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    return parse(path.read_text(encoding="utf-8"), str(path))


def dumps(doc: TOMLDocument) -> str:
    """The document's text, ending in exactly one newline."""
    return tomlkit.dumps(doc).rstrip("\n") + "\n"


def save(bundle: pathlib.Path, doc: TOMLDocument) -> pathlib.Path:
    """Validates `doc` and writes it as the bundle's manifest (temp file + rename)."""
    path = _manifest_path(bundle)
    validate(doc, where=str(path))
    text = dumps(doc)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _manifest_path(bundle: pathlib.Path) -> pathlib.Path:
    bundle = pathlib.Path(bundle)
    return bundle if bundle.name == MANIFEST_FILE or bundle.suffix == ".toml" else bundle / MANIFEST_FILE


def encoders(doc: TOMLDocument) -> list[Encoder]:
    return [Encoder(str(e["precision"]), str(e["file"]), str(e["sha256"])) for e in _entries(doc)]


def encoder(doc: TOMLDocument, precision: str) -> Encoder | None:
    return next((e for e in encoders(doc) if e.precision == precision), None)


def _entries(doc: TOMLDocument) -> AoT | list:
    image = doc.get("image")
    if image is None:
        raise ManifestError("no [image] table")
    return image.get("encoder", [])


# ---------------------------------------------------------------- editing

def set_encoder(doc: TOMLDocument, precision: str, file: str, sha: str) -> None:
    """Points the `precision` entry at `file` / `sha`, or adds the entry (in
    precision order among the others). An NNEF copy made from another file is
    dropped from the entry (its three keys go; the runtime would ignore it)."""
    if precision not in PRECISIONS:
        raise ManifestError(f"unknown precision {precision!r} (expected {', '.join(PRECISIONS)})")
    image = doc["image"]
    if "encoder" not in image:
        image.add("encoder", tomlkit.aot())
    entries = image["encoder"]
    for e in entries:
        if e["precision"] == precision:
            e["file"] = file
            e["sha256"] = sha
            if "nnef_source_sha256" in e and str(e["nnef_source_sha256"]).lower() != sha.lower():
                for k in NNEF_KEYS:
                    if k in e:
                        del e[k]
            return
    at = next((i for i, e in enumerate(entries) if str(e["precision"]) > precision), len(entries))
    table = _encoder_table(Encoder(precision, file, sha))
    if at < len(entries) or _has_following_table(doc, "image"):
        table.add(tomlkit.nl())
    if at == len(entries) and len(entries):
        _end_with_blank_line(entries[len(entries) - 1])
    entries.insert(at, table)


def remove_encoder(doc: TOMLDocument, precision: str) -> bool:
    """Removes the `precision` entry; whether there was one. Comments in its
    text go with it (tomlkit counts a comment just above the next table header
    as part of this entry)."""
    entries = _entries(doc)
    for i, e in enumerate(entries):
        if e["precision"] == precision:
            del entries[i]
            return True
    return False


def remove_nnef(doc: TOMLDocument, precision: str | None = None) -> None:
    """Drops the NNEF keys of one entry (or of all): for a copy of a bundle
    without the NNEF files."""
    for e in _entries(doc):
        if precision is None or e["precision"] == precision:
            for k in NNEF_KEYS:
                if k in e:
                    del e[k]


def set_compute_form(doc: TOMLDocument, owner: str = "int8") -> Encoder:
    """Lists the `owner` file's int8-compute form: an entry that names the
    owner's file and repeats its sha256 (replacing any earlier one)."""
    if owner not in COMPUTE_OWNERS:
        raise ManifestError(f"{COMPUTE_FORM} runs the int8 or the f32 file, not {owner!r}")
    source = encoder(doc, owner)
    if source is None:
        raise ManifestError(f"no {owner} image encoder to run as {COMPUTE_FORM}")
    set_encoder(doc, COMPUTE_FORM, source.file, source.sha256)
    return Encoder(COMPUTE_FORM, source.file, source.sha256)


def set_calibration(doc: TOMLDocument, unseen_bonus: float, seen_names: str) -> None:
    """Replaces (or adds) `[text.calibration]`."""
    text = doc.get("text")
    if text is None:
        raise ManifestError("[text.calibration] needs a [text] table")
    if "calibration" in text:
        del text["calibration"]
    _end_with_blank_line(text)
    text.add("calibration", _calibration_table(Calibration(unseen_bonus, seen_names)))


def remove_text(doc: TOMLDocument) -> bool:
    """Removes `[text]` (and its calibration); whether there was one."""
    if "text" in doc:
        del doc["text"]
        return True
    return False


def remove_key(doc: TOMLDocument, key: str) -> bool:
    """Removes an optional top-level key (`prompts`, `description`)."""
    if key in ("format", "name", "fingerprint", "image"):
        raise ManifestError(f"{key} is required")
    if key in doc:
        del doc[key]
        return True
    return False


def _ends_with_blank_line(table: Table) -> bool:
    """Whether the table's text ends in a blank line (tomlkit keeps the blank
    line that separates two tables as trailing whitespace of the first)."""
    body = [item for _, item in table.value.body if not isinstance(item, Null)]
    return bool(body) and isinstance(body[-1], Whitespace) and "\n" in body[-1].as_string()


def _end_with_blank_line(table: Table) -> None:
    if not _ends_with_blank_line(table):
        table.add(tomlkit.nl())


def _has_following_table(doc: TOMLDocument, key: str) -> bool:
    keys = list(doc.keys())
    return key in keys and keys.index(key) + 1 < len(keys)


# ---------------------------------------------------------------- validation

def validate(doc: TOMLDocument | dict, where: str = MANIFEST_FILE) -> None:
    """Raises ManifestError unless the runtime would accept the manifest and
    an int8-compute entry, if any, runs the int8 or the f32 file."""
    d = doc.unwrap() if hasattr(doc, "unwrap") else doc

    def bad(key: str, msg: str) -> ManifestError:
        return ManifestError(f"{where}: key '{key}': {msg}")

    def unknown(table: dict, allowed: set[str], prefix: str) -> None:
        extra = sorted(set(table) - allowed)
        if extra:
            raise bad(prefix + extra[0], "unknown key (the runtime refuses it)")

    def need(table: dict, key: str, kind: type | tuple, prefix: str = "") -> Any:
        if key not in table:
            raise bad(prefix + key, "missing")
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise bad(prefix + key, f"{value!r} has the wrong type")
        return value

    def hex64(value: str, key: str) -> None:
        if not _HEX64.fullmatch(value):
            raise bad(key, f"{value!r} is not a sha256 (64 hex digits)")

    def relative(value: str, key: str) -> None:
        p = pathlib.PurePosixPath(value)
        if not value:
            raise bad(key, "must not be empty")
        if p.is_absolute() or pathlib.PureWindowsPath(value).is_absolute() or ".." in p.parts:
            raise bad(key, f"{value!r} must be a path inside the bundle folder (no absolute path, no '..')")

    unknown(d, _TOP_KEYS, "")
    if need(d, "format", int) != FORMAT:
        raise bad("format", f"unsupported manifest format {d['format']} (the runtime reads {FORMAT})")
    if not need(d, "name", str).strip():
        raise bad("name", "must not be empty")
    if "description" in d:
        need(d, "description", str)
    hex64(need(d, "fingerprint", str), "fingerprint")
    if "prompts" in d:
        relative(need(d, "prompts", str), "prompts")

    img = need(d, "image", dict)
    unknown(img, _IMAGE_KEYS, "image.")
    if not 16 <= need(img, "size", int, "image.") <= 2048:
        raise bad("image.size", f"{img['size']} is out of range 16..=2048")
    if need(img, "resize", str, "image.") not in RESIZE_MODES:
        raise bad("image.resize", f"unknown mode {img['resize']!r} (expected {' or '.join(RESIZE_MODES)})")
    if need(img, "interpolation", str, "image.") not in INTERPOLATIONS:
        raise bad("image.interpolation", f"unknown filter {img['interpolation']!r}")
    for key in ("mean", "std"):
        v = need(img, key, list, "image.")
        if len(v) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                  for x in v):
            raise bad(f"image.{key}", "must be three finite numbers")
    if any(x <= 0 for x in img["std"]):
        raise bad("image.std", "every value must be positive")
    if not 1 <= need(img, "embed_dim", int, "image.") <= 65536:
        raise bad("image.embed_dim", f"{img['embed_dim']} is out of range 1..=65536")
    scale = need(img, "logit_scale", (int, float), "image.")
    if not (math.isfinite(scale) and scale > 0):
        raise bad("image.logit_scale", f"{scale} must be a positive number")
    entries = need(img, "encoder", list, "image.")
    if not entries:
        raise bad("image.encoder", "at least one [[image.encoder]] entry is required")
    by_precision: dict[str, dict] = {}
    for i, e in enumerate(entries):
        key = f"image.encoder[{i}]."
        if not isinstance(e, dict):
            raise bad(key[:-1], "must be a table")
        unknown(e, _ENCODER_KEYS, key)
        precision = need(e, "precision", str, key)
        if precision not in PRECISIONS:
            raise bad(key + "precision", f"unknown precision {precision!r} (expected {', '.join(PRECISIONS)})")
        if precision in by_precision:
            raise bad(key + "precision", f"precision {precision} is listed twice")
        relative(need(e, "file", str, key), key + "file")
        hex64(need(e, "sha256", str, key), key + "sha256")
        present = [k for k in NNEF_KEYS if k in e]
        if present and len(present) != len(NNEF_KEYS):
            raise bad(key + "nnef", "nnef, nnef_sha256 and nnef_source_sha256 go together: give all three or none")
        if present:
            relative(need(e, "nnef", str, key), key + "nnef")
            hex64(need(e, "nnef_sha256", str, key), key + "nnef_sha256")
            hex64(need(e, "nnef_source_sha256", str, key), key + "nnef_source_sha256")
        by_precision[precision] = e
    if need(img, "default_precision", str, "image.") not in by_precision:
        raise bad("image.default_precision", f"{img['default_precision']} has no [[image.encoder]] entry")
    compute = by_precision.get(COMPUTE_FORM)
    if compute is not None:
        owner = next((by_precision[p] for p in COMPUTE_OWNERS
                      if p in by_precision and by_precision[p]["file"] == compute["file"]), None)
        if owner is None:
            raise bad(f"image.encoder[{entries.index(compute)}].file",
                      f"{COMPUTE_FORM} names {compute['file']!r}, which is neither the int8 nor the f32 file "
                      "(it is a way of running one of them, not a file of its own)")
        if owner["sha256"].lower() != compute["sha256"].lower():
            raise bad(f"image.encoder[{entries.index(compute)}].sha256",
                      f"{COMPUTE_FORM} must repeat the sha256 of {owner['file']!r}")

    if "text" in d:
        t = need(d, "text", dict)
        unknown(t, _TEXT_KEYS, "text.")
        relative(need(t, "file", str, "text."), "text.file")
        hex64(need(t, "sha256", str, "text."), "text.sha256")
        relative(need(t, "tokenizer", str, "text."), "text.tokenizer")
        if need(t, "context_length", int, "text.") <= 0:
            raise bad("text.context_length", "must be positive")
        if need(t, "pad_id", int, "text.") < 0:
            raise bad("text.pad_id", "must not be negative")
        if "attention_mask" in t:
            need(t, "attention_mask", bool, "text.")
        if "calibration" in t:
            c = need(t, "calibration", dict, "text.")
            unknown(c, _CALIBRATION_KEYS, "text.calibration.")
            bonus = need(c, "unseen_bonus", (int, float), "text.calibration.")
            if not (math.isfinite(bonus) and 0 <= bonus <= MAX_UNSEEN_BONUS):
                raise bad("text.calibration.unseen_bonus", f"{bonus} is outside 0..={MAX_UNSEEN_BONUS}")
            relative(need(c, "seen_names", str, "text.calibration."), "text.calibration.seen_names")
