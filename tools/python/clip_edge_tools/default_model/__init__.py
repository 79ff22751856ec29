"""clip-edge's emoji model (models/emoji, MODEL_CARD.md; the default model until 2026-12-07, hence this package's name):

  towers     the CNN image tower and the frozen MiniLM-L6 text tower
  train      training (tools/python/train_default.py --out)
  package    export to ONNX and the bundle (train_default.py --package)
  calibrate  the seen/unseen bonus, chosen on seen concepts only (calibrate_default.py)
  evaluate   test sets with fresh seeds scored by `clip-edge eval` (eval_default.py)
"""
