"""The one bridge to the `clip-edge` binary (the host CLI of tools/src/): every
Python tool that embeds, benches, builds prompt stores, evaluates or adds NNEF
copies through tract does it through `ClipEdge`.

`ClipEdge.locate()` takes an explicit path, or target/debug/clip-edge, and
builds that with `cargo build -p clip-edge-tools` only when it is missing.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Sequence

from .errors import ToolError
from .log import logger
from .paths import DEBUG_BINARY, ROOT

log = logger("clip-edge")


def last_line(stderr: str) -> str:
    """The last line of a failed command's stderr: clip-edge's one-line error."""
    return (stderr.strip().splitlines() or ["(no message)"])[-1]


class ClipEdge:
    """A `clip-edge` binary and the commands the Python tools run with it."""

    def __init__(self, path: pathlib.Path | str):
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"ClipEdge({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def locate(cls, explicit: str | pathlib.Path | None = None, build: bool = True) -> ClipEdge:
        """`explicit` if given (it must exist), else target/debug/clip-edge,
        built with cargo first if it is missing and `build` is true."""
        if explicit:
            path = pathlib.Path(explicit)
            if not path.is_file():
                raise ToolError(f"{path}: no clip-edge binary there")
            return cls(path)
        if not DEBUG_BINARY.is_file():
            if not build:
                raise ToolError(f"{DEBUG_BINARY}: missing; build it with cargo build -p clip-edge-tools")
            log("building clip-edge (cargo build -p clip-edge-tools)")
            subprocess.run(["cargo", "build", "-q", "-p", "clip-edge-tools", "--bin", "clip-edge"], cwd=ROOT,
                           check=True)
        return cls(DEBUG_BINARY)

    # ------------------------------------------------------------ plumbing

    def run(self, *args: str | pathlib.Path, quiet: bool = True, check: bool = True,
            capture: bool = True) -> subprocess.CompletedProcess:
        """`clip-edge [-q] ARGS...`; with `check`, a failure raises ToolError
        with clip-edge's own message."""
        cmd = [str(self.path), *(["-q"] if quiet else []), *(str(a) for a in args)]
        r = subprocess.run(cmd, capture_output=capture, text=True)
        if check and r.returncode != 0:
            msg = last_line(r.stderr) if capture else f"exit status {r.returncode}"
            raise ToolError(f"clip-edge {' '.join(str(a) for a in args[:2])}: {msg}")
        return r

    # ------------------------------------------------------------ commands

    def embed_images(self, bundle: pathlib.Path, precision: str, images: Sequence[pathlib.Path]):
        """(N x D embeddings, None), or (None, clip-edge's error) when tract
        cannot load or run that form: `clip-edge embed --json`."""
        import numpy as np

        r = self.run("embed", "--json", "--bundle", bundle, "--precision", precision, *images, check=False)
        if r.returncode != 0:
            return None, last_line(r.stderr)
        return np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines()]), None

    def embed_texts(self, bundle: pathlib.Path, texts: Sequence[str]):
        """(N x D text embeddings, None) or (None, error): `clip-edge embed --text`."""
        import numpy as np

        args: list[str | pathlib.Path] = ["embed", "--json", "--bundle", bundle]
        for t in texts:
            args += ["--text", t]
        r = self.run(*args, check=False)
        if r.returncode != 0:
            return None, last_line(r.stderr)
        return np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines()]), None

    def bench(self, bundle: pathlib.Path, image: pathlib.Path, *, prompts: pathlib.Path, precision: str = "f32",
              frames: int | None = None, warmup: int | None = None, threads: int | None = None) -> dict:
        """`clip-edge bench --json`: cold start, per-frame timings, int8-compute layers."""
        args: list[str | pathlib.Path] = ["bench", "--bundle", bundle, "--prompts", prompts, "--precision", precision]
        for flag, value in (("--frames", frames), ("--warmup", warmup), ("--threads", threads)):
            if value is not None:
                args += [flag, str(value)]
        return json.loads(self.run(*args, "--json", image).stdout)

    def int8_layers(self, bundle: pathlib.Path, image: pathlib.Path) -> list[dict]:
        """The runtime's per-layer decisions for the bundle's int8-compute form."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            store = pathlib.Path(tmp) / "probe.store"
            self.prompts_random(bundle, store, labels=("a", "b"))
            report = self.bench(bundle, image, prompts=store, precision="int8-compute", frames=1, warmup=0)
        return report["int8_compute"]["layers"]

    def prompts_build(self, bundle: pathlib.Path, labels: pathlib.Path, out: pathlib.Path, *,
                      calibration: bool = True, quiet: bool = True) -> None:
        """`clip-edge prompts build` (its summary goes to stdout unless `quiet`)."""
        flags = [] if calibration else ["--no-calibration"]
        self.run("prompts", "build", *flags, "--bundle", bundle, "--labels", labels, "--out", out,
                 quiet=quiet, capture=quiet)

    def prompts_random(self, bundle: pathlib.Path, out: pathlib.Path, labels: Sequence[str] = ("a", "b")) -> None:
        """`clip-edge prompts random`: a store of seeded random vectors (no text encoder needed)."""
        self.run("prompts", "random", "--bundle", bundle, "--labels", ",".join(labels), "--out", out)

    def eval(self, bundle: pathlib.Path, data: pathlib.Path, prompts: pathlib.Path, precision: str = "f32") -> dict:
        """`clip-edge eval --json` over a folder of class subfolders."""
        return json.loads(self.run("eval", "--bundle", bundle, "--precision", precision, "--data", data,
                                   "--prompts", prompts, "--json").stdout)

    def bundle_nnef(self, bundle: pathlib.Path) -> tuple[list[str], str | None]:
        """`clip-edge bundle nnef`: (its report lines, None) or (lines, error)."""
        r = self.run("bundle", "nnef", "--bundle", bundle, check=False)
        return r.stdout.splitlines(), (last_line(r.stderr) if r.returncode != 0 else None)
