"""Real ONNX models and bundles for tests and benchmarks."""
