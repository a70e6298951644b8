"""The training loop (train) and its side jobs: LR rules, last.pt, the loop state and RNGs, stop signals,
validation."""
