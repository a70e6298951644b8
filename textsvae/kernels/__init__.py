"""Tensor primitives without parameters of their own: the fused ops and output-layer kernels, the LSTM
sampler, dropout, the optimiser step, the fast-path switches, device and precision checks, and the Gaussian and
importance-weighted estimators (metrics)."""
