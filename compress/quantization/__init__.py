"""Quantization algorithms (ONNX Runtime static int8 so far)."""
