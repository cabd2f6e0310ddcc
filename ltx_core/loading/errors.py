"""The one error type for files that cannot be loaded, and the words its advice is given in.

A CheckpointError says what was found and what was expected in words every front end shares; the
step to take names a place to put a file, and that place is spelled differently by the Python API
(`load_vae()`, `tokenizer_path`), the command line (`--vae`, `--tokenizer`) and the nodes
(`vae_name`). So the error carries the step as a key of `API_ADVICE`, and a front end rewords it
with its own table (`CheckpointError.reworded`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# Advice key → what to do, in the Python API's words. "transformer", "vae", "text_encoder": the file
# holds that component (and not the one asked for); "missing_tokenizer": no T5 tokenizer was found
# for a T5 model; "bad_tokenizer": the tokenizer found is unreadable or not T5's; "release": the
# release cannot be read off the files, or the one named does not fit them; "matching_vae": the VAE is
# of another release than the transformer; "latent_upsampler": the file is a 0.9.7+ latent upsampler.
API_ADVICE: dict[str, str] = {
    "transformer": "load it with load_transformer()",
    "vae": "load it with load_vae()",
    "text_encoder": "load it with load_text_encoder()",
    "missing_tokenizer": "put spiece.model (from google/t5-v1_1-xxl or a diffusers LTX-Video tokenizer/ folder) "
    "or tokenizer.json (e.g. ComfyUI's comfy/text_encoders/t5_tokenizer/) next to the model, "
    "or pass its folder as tokenizer_path",
    "bad_tokenizer": "pass T5's own tokenizer (spiece.model or tokenizer.json of google/t5-v1_1-xxl) as tokenizer_path",
    "release": "name the release as release= (Models.load, detect_release)",
    "matching_vae": "pass the VAE of the transformer's release (vae= of Models.load, detect_release)",
    "latent_upsampler": "load it with load_latent_upsampler() (or upsampler= of Models.load, for multiscale)",
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: what was found, what was expected and, when there is a
    step that depends on the front end, its key in `API_ADVICE` (`advice`)."""

    def __init__(
        self,
        path: str | Path,
        found: str,
        expected: str,
        advice: str | None = None,
        words: Mapping[str, str] = API_ADVICE,
    ) -> None:
        self.path = Path(path)
        self.found = found
        self.expected = expected
        self.advice = advice
        sentences = [f"{self.path.name}: {_clause(found)}; expected {_clause(expected)}."]
        if advice is not None:
            step = _clause(words[advice])
            sentences.append(f"{step[:1].upper()}{step[1:]}.")
        super().__init__(" ".join([*sentences, f"(file: {self.path})"]))

    def reworded(self, words: Mapping[str, str]) -> CheckpointError:
        """The same error with its advice in `words` (a table with the keys of `API_ADVICE`)."""
        return CheckpointError(self.path, self.found, self.expected, self.advice, words)


def _clause(text: str) -> str:
    """`text` without the closing period, so that sentences join with exactly one."""
    return text.strip().removesuffix(".")
