"""Speed benchmarks, their PyTorch twins and profilers: see README.md."""
