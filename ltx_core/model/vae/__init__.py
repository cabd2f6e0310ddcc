"""The causal video VAE of LTX-Video."""
