"""Helpers of the shell benchmarks in tools/bench/.

  python -m clip_edge_tools.bench dynamic-int8 --bundle B --dynamic FILE --out DIR

makes DIR a bundle of B's f32 encoder and ONNX Runtime's dynamic int8 of it
(FILE, made first if missing) as the int8 form, for tools/bench/compare.sh:
B's manifest without its text tower, prompt store, f16 and int8-compute forms
and NNEF copies (none of those files are in DIR).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

from . import manifest
from .errors import ToolError, exit_code
from .manifest import COMPUTE_FORM


def dynamic_int8_bundle(bundle: pathlib.Path, dynamic: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    doc = manifest.load(bundle)
    f32 = manifest.encoder(doc, "f32")
    if f32 is None:
        raise ToolError(f"{bundle}: no f32 image encoder")
    if not dynamic.is_file():
        from .export.quantise import quantise_int8_dynamic

        dynamic.parent.mkdir(parents=True, exist_ok=True)
        quantise_int8_dynamic(bundle / f32.file, dynamic)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle / f32.file, out / f32.file)
    shutil.copyfile(dynamic, out / "image_encoder_int8.onnx")
    manifest.remove_text(doc)
    manifest.remove_key(doc, "prompts")
    for precision in ("f16", COMPUTE_FORM):
        manifest.remove_encoder(doc, precision)
    manifest.remove_nnef(doc)
    manifest.set_encoder(doc, "int8", "image_encoder_int8.onnx", manifest.sha256(out / "image_encoder_int8.onnx"))
    manifest.save(out, doc)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clip_edge_tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dynamic-int8", help="a bundle of the f32 encoder and its dynamic int8 form")
    d.add_argument("--bundle", type=pathlib.Path, required=True)
    d.add_argument("--dynamic", type=pathlib.Path, required=True, help="the dynamic int8 file (made if missing)")
    d.add_argument("--out", type=pathlib.Path, required=True)
    args = p.parse_args(argv)
    return exit_code(lambda: dynamic_int8_bundle(args.bundle, args.dynamic, args.out))


if __name__ == "__main__":
    sys.exit(main())
