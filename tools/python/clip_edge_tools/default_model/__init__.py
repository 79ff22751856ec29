"""clip-edge's default model (models/default, MODEL_CARD.md):

  towers     the CNN image tower and the frozen MiniLM-L6 text tower
  train      training (tools/python/train_default.py --out)
  package    export to ONNX and the bundle (train_default.py --package)
  calibrate  the seen/unseen bonus, chosen on seen concepts only (calibrate_default.py)
  evaluate   test sets with fresh seeds scored by `clip-edge eval` (eval_default.py)
"""
