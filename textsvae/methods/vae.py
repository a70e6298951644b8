"""The plain VAE: maximise the ELBO with beta = 1 throughout (Kingma & Welling 2014; Bowman et al. 2016)."""
from . import register
from .base import Method


@register("vae")
class VAE(Method):
    """Plain ELBO, beta = 1 at every step (Kingma & Welling 2014)."""
