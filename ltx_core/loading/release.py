"""Which LTX-Video release does a transformer + VAE pair belong to? Decided by content, or named.

Content tells: the model's width (2B or 13B), the VAE's layout (0.9.0, 0.9.1 or 0.9.5+), and, in
files with an embedded config (Lightricks' single files), the causal RoPE fix of 0.9.5+ and whether
the file is distilled (`allowed_inference_steps`). That leaves some releases no content separates:
GGUF and split files say nothing but their width, and a single file with an embedded config still
cannot tell 0.9.5 from 0.9.6-dev, or 0.9.7 from 0.9.8. Releases that content cannot tell apart but
that generate alike in one pass (the same one-pass settings, defaults.py) need no choice: the first
is taken and the others are named beside it. When they differ, "auto" refuses, naming the file and the
releases to choose from: the user names the release (`release=` here, `--release` on the command
line, the loader node's `release` input), and a named release must fit what the content does tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..defaults import RELEASE_DEFAULTS, RELEASES, SIZES, ReleaseDefaults, changed_fields, defaults_for
from .detect import Detected
from .errors import CheckpointError
from .transformer import inspect_transformer
from .vae import inspect_vae

AUTO = "auto"
# ReleaseDefaults fields in a user's words, for saying how releases differ
SETTING_WORDS = {"one_pass": "steps and guidance", "distilled": "distillation", "cond_noise_scale": "condition noise"}
RELEASE_CHOICES = (AUTO, *RELEASES)  # what a user may name: "auto", or a release


@dataclass(frozen=True)
class Release:
    """The release a transformer + VAE pair was decided to be, with its defaults."""

    name: str  # a name of defaults.RELEASES
    size: str  # "2B" or "13B"
    defaults: ReleaseDefaults
    basis: str  # what decided it, e.g. "its embedded config and its VAE's layout", "named"
    alike: tuple[str, ...] = ()  # releases content cannot tell from this one, alike in one pass

    def __str__(self) -> str:
        return self.name

    @property
    def causal_positions(self) -> bool:
        return self.defaults.causal_positions

    def describe(self) -> str:
        """One line for the user: which release, at which size, and how that was decided."""
        alike = f" (or {' or '.join(self.alike)}: the same settings for one pass)" if self.alike else ""
        return f"LTX-Video {self.name} {self.size}{alike}, from {self.basis}"


def detect_release(checkpoint: str | Path, vae: str | Path | None = None, release: str = AUTO) -> Release:
    """The release of the transformer in `checkpoint` with the VAE in `vae` (default: the checkpoint's
    own), from their headers (no weight is read): decided by content with `release` "auto", or the
    named release, checked against the content. Raises CheckpointError (advice "release" or
    "matching_vae") when content cannot decide or contradicts the name."""
    transformer = inspect_transformer(checkpoint)
    return resolve_release(transformer, inspect_vae(vae if vae is not None else checkpoint), release)


def resolve_release(transformer: Detected, vae: Detected, release: str = AUTO) -> Release:
    """The release of an inspected transformer and VAE (see detect_release)."""
    hints = transformer.hints
    if hints is None:
        raise ValueError(f"{transformer.path.name}: inspected as {transformer.format}, not as a transformer")
    if release != AUTO:
        return _named(transformer, vae, release)
    at_size = sorted(
        (e for e in RELEASE_DEFAULTS.values() if e.size == hints.size), key=lambda e: RELEASES.index(e.release)
    )
    said = [e for e in at_size if not _contradictions(e, transformer, True)]
    if not said:
        found = f"is a {_shape(transformer)}, and what {hints.said_by} says{_said(transformer)} fits no release"
        raise CheckpointError(transformer.path, found, f"a {hints.size} LTX-Video release", "release")
    fitting = [e for e in said if e.vae == vae.release]
    if not fitting:
        raise _vae_mismatch(transformer, vae, said)
    first = _with_file_schedule(fitting[0], transformer)
    basis = ", ".join(filter(None, [hints.said_by, f"the layout of its VAE ({vae.release})"])) + " and its width"
    differ = sorted(
        {SETTING_WORDS.get(f, f.replace("_", " ")) for e in fitting[1:] for f in changed_fields(fitting[0], e)}
    )
    if differ:
        names = _names(e.release for e in fitting)
        found = (
            f"is a {_shape(transformer)} with a {vae.release} VAE{_said(transformer)}: it can be {names}, whose "
            f"settings differ ({', '.join(differ)})"
        )
        raise CheckpointError(transformer.path, found, f"the release named, one of {names}", "release")
    return Release(first.release, first.size, first, basis, tuple(e.release for e in fitting[1:]))


def _named(transformer: Detected, vae: Detected, release: str) -> Release:
    """The named release, if the content allows it."""
    hints = transformer.hints
    assert hints is not None
    if release not in SIZES:
        raise ValueError(f"unknown LTX-Video release {release!r}; choose one of {', '.join(RELEASE_CHOICES)}")
    if hints.size not in SIZES[release]:
        at_size = [r for r in RELEASES if hints.size in SIZES[r]]
        found = f"is a {_shape(transformer)}, and LTX-Video {release} was released as {' and '.join(SIZES[release])}"
        raise CheckpointError(transformer.path, found, f"a {hints.size} release: {_names(at_size)}", "release")
    entry = defaults_for(release, hints.size)
    contradicts = _contradictions(entry, transformer, False)
    if contradicts:
        found = f"{contradicts[0]}, but LTX-Video {release} {contradicts[1]}"
        expected = f"auto, or a release that fits: {_fitting(transformer)}"
        raise CheckpointError(transformer.path, found, expected, "release")
    if entry.vae != vae.release:
        found = (
            f"holds a {vae.release} VAE, but LTX-Video {release} (named for the transformer {transformer.path.name}) "
            f"has the {entry.vae} one"
        )
        raise CheckpointError(vae.path, found, f"the {entry.vae} VAE of {release}", "matching_vae")
    return Release(release, hints.size, _with_file_schedule(entry, transformer), f"the release named ({release})")


def _contradictions(entry: ReleaseDefaults, transformer: Detected, strict: bool) -> tuple[str, str] | None:
    """(what the file says, what the release is) where the transformer's own hints rule `entry` out.
    An embedded config without `allowed_inference_steps` rules distilled releases out only when
    `strict` (deciding by content): a file re-saved without that entry still runs as the one named."""
    hints = transformer.hints
    assert hints is not None
    if hints.causal is not None and hints.causal != entry.causal_positions:
        said = "the causal RoPE fix of 0.9.5+" if hints.causal else "0.9.0 / 0.9.1 positions (no causal RoPE fix)"
        was = "has the causal RoPE fix" if entry.causal_positions else "has no causal RoPE fix"
        return f"{hints.said_by} gives it {said}", was
    if hints.distilled and not entry.distilled:
        return f"{hints.said_by} names allowed_inference_steps (a distilled release)", "is not distilled"
    if strict and hints.distilled is False and entry.distilled:
        return f"{hints.said_by} names no allowed_inference_steps (not a distilled release)", "is distilled"
    return None


def _fitting(transformer: Detected) -> str:
    hints = transformer.hints
    assert hints is not None
    at_size = [defaults_for(r, hints.size) for r in RELEASES if hints.size in SIZES[r]]
    return _names(e.release for e in at_size if not _contradictions(e, transformer, False))


def _vae_mismatch(transformer: Detected, vae: Detected, releases: Sequence[ReleaseDefaults]) -> CheckpointError:
    layouts = sorted({e.vae for e in releases})
    names = _names(e.release for e in releases)
    found = (
        f"holds a {vae.release} VAE, but the transformer {transformer.path.name} is a {_shape(transformer)}"
        f"{_said(transformer)}, of {names}, whose VAE is the {' or '.join(layouts)} one"
    )
    return CheckpointError(vae.path, found, f"the VAE of the same release ({' or '.join(layouts)})", "matching_vae")


def _with_file_schedule(entry: ReleaseDefaults, transformer: Detected) -> ReleaseDefaults:
    """The release's defaults with the schedule the file's own scheduler config selects, as the
    official configs' `sampler: "from_checkpoint"` does; explicit timesteps (distilled) win over it."""
    hints = transformer.hints
    if hints is None or hints.schedule is None or entry.timesteps is not None:
        return entry
    return replace(entry, schedule=hints.schedule)


def _shape(transformer: Detected) -> str:
    cfg, hints = transformer.config, transformer.hints
    assert hints is not None
    blocks = f"{cfg.num_layers} block{'s' * (cfg.num_layers != 1)}"
    return f"{hints.size} transformer ({blocks} of width {cfg.hidden_dim})"


def _said(transformer: Detected) -> str:
    hints = transformer.hints
    assert hints is not None
    return f" ({hints.describe().split(', ', 1)[1]})" if hints.said_by else " (its file names no release)"


def _names(names: Iterable[str]) -> str:
    """ "a", "a or b", "a, b or c"."""
    listed = list(dict.fromkeys(names))
    return listed[0] if len(listed) == 1 else f"{', '.join(listed[:-1])} or {listed[-1]}"
