"""Text conditioning: prompts → T5 token ids → Conditioning(context, mask)."""

from .encoder import Conditioning, T5TextEncoder
from .tokenizer import PromptTokenizer, load_tokenizer

__all__ = ["Conditioning", "PromptTokenizer", "T5TextEncoder", "load_tokenizer"]
