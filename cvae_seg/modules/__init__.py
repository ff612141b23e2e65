"""Building blocks of the models: the Gaussian nets, generation nets, multi-scale heads, latents."""
