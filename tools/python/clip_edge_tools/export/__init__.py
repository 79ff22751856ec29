"""CLIP model -> clip-edge bundle (entry point: tools/python/export_bundle.py, `cli`).

  sources         open_clip / Hugging Face models reduced to a `Source`
  onnx_export     torch module -> ONNX (opset 17, TorchScript exporter)
  quantise        weight-only int8, dynamic int8, f16 storage
  verify          probe images; PyTorch vs ONNX Runtime vs tract; which forms are kept
  bundle          the bundle folder around ONNX files (`write_bundle`), NNEF copies
  pipeline        one export from a `Source`
  cli             open-clip | hf | package | requantise
  int8_reference  the int8-compute arithmetic as an ONNX graph (the tests' reference)
  repro_tract_int8_sums  the dynamic-int8 slowdown reproduction for upstream tract
"""
