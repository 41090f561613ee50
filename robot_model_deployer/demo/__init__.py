"""Demo: the demo camera node, the one-process demo and real models built locally for it and the benchmarks."""
