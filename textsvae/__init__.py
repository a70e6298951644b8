"""textsvae: a benchmark suite for variational autoencoders of text with LSTM decoders."""
from .core.version import __version__

__all__ = ["__version__", "load_run"]


def __getattr__(name: str):
    """Lazy exports: `textsvae.load_run` imports torch only when first used."""
    if name == "load_run":
        from .inference.api import load_run

        return load_run
    raise AttributeError(f"module 'textsvae' has no attribute '{name}'")
