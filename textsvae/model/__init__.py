"""The VAE and LM modules (models), their output layer and step-by-step decoding (greedy, sampling, beam)."""
