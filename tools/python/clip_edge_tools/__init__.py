"""clip-edge's host-side Python tools (never needed by the device or by `cargo test`).

  manifest       the one bundle.toml reader/writer (tomlkit: comments and layout kept)
  binary         the one bridge to the `clip-edge` binary (embed, bench, prompts, nnef)
  tokenizer      CLIP's BPE as tokenizer.json, checked against open_clip
  export/        CLIP model -> bundle: ONNX export, quantisation, verification
  default_model/ the emoji model (models/emoji): towers, training, packaging, calibration, evaluation
  data/          emoji concepts and camera-like frames; few-shot test sets
  fixtures/      the committed test fixtures under tests/data and their references

Command-line entry points stay at tools/python/*.py (thin wrappers); each
module with a `main()` also runs as `python -m clip_edge_tools.<module>` with
tools/python on the path (`cd tools/python` or `PYTHONPATH=tools/python`).
"""
