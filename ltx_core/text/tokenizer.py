"""Prompt → T5 token ids + attention mask, from a SentencePiece `spiece.model` or a `tokenizer.json`.

T5 conventions (official LTX-Video, diffusers and ComfyUI agree): the prompt is stripped of outer
whitespace, `</s>` (id 1) is appended, there is no BOS, and padding uses `<pad>` (id 0). A prompt
longer than `max_length` keeps its first `max_length - 1` tokens and still ends with `</s>`, as
transformers' T5Tokenizer does with `truncation=True`.

Both sources give the same ids for ordinary text (the tests check it). They differ only for prompts
that spell a special token literally ("</s>", "<extra_id_0>"): tokenizer.json matches it as one
token, SentencePiece spells it out in pieces, like the official slow T5Tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..loading.errors import CheckpointError

SPIECE = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
A_TOKENIZER = f"T5's tokenizer ({SPIECE} or {TOKENIZER_JSON})"


@dataclass(frozen=True)
class PromptTokenizer:
    """Pads and truncates T5 ids; `encode_batch` maps stripped prompts to ids without `</s>`."""

    source: Path
    encode_batch: Callable[[list[str]], list[list[int]]]
    vocab_size: int
    eos_id: int = 1
    pad_id: int = 0

    def __call__(self, prompts: Sequence[str], max_length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts (B strings) → (input_ids, attention_mask), both (B, max_length) int64; mask 1 = token."""
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1 (room for </s>), got {max_length}")
        ids = torch.full((len(prompts), max_length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(prompts), max_length), dtype=torch.int64)
        for row, tokens in enumerate(self.encode_batch([p.strip() for p in prompts])):
            tokens = [*tokens[: max_length - 1], self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
            mask[row, : len(tokens)] = 1
        return ids, mask


def _open_sentencepiece(path: Path) -> PromptTokenizer:
    try:
        import sentencepiece
    except ImportError as error:
        message = f"Reading {path.name} needs the `sentencepiece` package: pip install sentencepiece"
        raise ImportError(message) from error
    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as error:
        found = f"is not a readable SentencePiece model ({error})"
        raise CheckpointError(path, found, A_TOKENIZER, "bad_tokenizer") from error
    eos, pad = processor.eos_id(), processor.pad_id()
    if eos < 0 or pad < 0:
        found = f"has no </s> or <pad> piece (eos id {eos}, pad id {pad}), so it is not a T5 tokenizer"
        raise CheckpointError(path, found, A_TOKENIZER, "bad_tokenizer")
    return PromptTokenizer(path, processor.encode, processor.get_piece_size(), eos, pad)


def _open_tokenizer_json(path: Path) -> PromptTokenizer:
    try:
        import tokenizers
    except ImportError as error:
        raise ImportError(f"Reading {path.name} needs the `tokenizers` package: pip install tokenizers") from error
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exception for every parse problem
        found = f"is not a readable tokenizer.json ({error})"
        raise CheckpointError(path, found, A_TOKENIZER, "bad_tokenizer") from error
    eos, pad = tokenizer.token_to_id("</s>"), tokenizer.token_to_id("<pad>")
    if eos is None or pad is None:
        found = "has no </s> or <pad> token, so it is not a T5 tokenizer"
        raise CheckpointError(path, found, A_TOKENIZER, "bad_tokenizer")
    # padding and truncation are ours; </s> too, so that both sources share one code path
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def encode_batch(prompts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(prompts, add_special_tokens=False)]

    return PromptTokenizer(path, encode_batch, tokenizer.get_vocab_size(), eos, pad)


def _is_json(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(64).lstrip().startswith(b"{")


# File kind → opener. A file's kind is decided by its content: tokenizer.json is JSON, spiece.model is protobuf.
_OPENERS: dict[str, Callable[[Path], PromptTokenizer]] = {"json": _open_tokenizer_json, "spm": _open_sentencepiece}


def tokenizer_candidates(folder: Path) -> list[Path]:
    """The files load_tokenizer tries for a folder, in order: its own, then its `tokenizer/` subfolder's."""
    return [d / name for d in (folder, folder / "tokenizer") for name in (SPIECE, TOKENIZER_JSON)]


def find_tokenizer(folders: Sequence[Path]) -> Path | None:
    """The first tokenizer file among the candidates of `folders`, or None."""
    return next((p for f in folders for p in tokenizer_candidates(f) if p.is_file()), None)


def not_found(path: Path, folders: Sequence[Path], advice: str = "missing_tokenizer") -> CheckpointError:
    """The error for a missing tokenizer: which files were looked for, where, and what to do (an
    `API_ADVICE` key: "missing_tokenizer" for a model without one, "bad_tokenizer" for a folder given
    as the tokenizer)."""
    looked = ", ".join(str(d) for f in folders for d in (f, f / "tokenizer"))
    found = f"has no T5 tokenizer (looked for {SPIECE} and {TOKENIZER_JSON} in {looked})"
    return CheckpointError(path, found, A_TOKENIZER, advice)


def load_tokenizer(path: str | Path) -> PromptTokenizer:
    """A T5 tokenizer from a `spiece.model` / `tokenizer.json` file, or a folder holding one (itself,
    or its `tokenizer/` subfolder as in a diffusers model folder)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "does not exist", A_TOKENIZER, "bad_tokenizer")
    file = path if path.is_file() else find_tokenizer([path])
    if file is None:
        raise not_found(path, [path], "bad_tokenizer")
    return _OPENERS["json" if _is_json(file) else "spm"](file)
