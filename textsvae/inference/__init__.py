"""Using a trained run: the `load_run` API and text generation (sample, reconstruct, interpolate)."""
