"""Data for the default model: emoji concepts, captions, the held-out split and
camera-like frames (`emoji`), labels files for them (`labels`), and the
few-shot test sets (`fewshot`)."""
