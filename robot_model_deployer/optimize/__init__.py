"""On-robot optimization: INT8 quantization behind an accuracy gate, compilation per target, choice by measurement."""
