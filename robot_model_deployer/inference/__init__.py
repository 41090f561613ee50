"""Inference core: ONNX Runtime sessions with the bundle's pre/post-processing."""
