"""textsvae: a benchmark suite for variational autoencoders of text with LSTM decoders."""
__version__ = "0.1.0"
