"""PyTorch modules of LTX-Video."""
