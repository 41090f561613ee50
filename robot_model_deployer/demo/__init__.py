"""Demo helpers: real models built locally for the demo and the benchmarks."""
