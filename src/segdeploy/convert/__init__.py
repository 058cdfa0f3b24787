"""Conversion: ONNX export (parity-checked, cached by fingerprint) and int8 quantization."""
