"""The transformer equals diffusers' LTXVideoTransformer3DModel and the official ltx_video
Transformer3DModel on the same random weights (float32, ≤ 1e-5), and the tests would notice a
wrong RoPE order, an ignored text mask, a wrong causal fix or frame rate."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltx_core import LTXVideoTransformer, TransformerConfig, video_positions
from ltx_core.loading.keymaps import transformer_from_diffusers
from ltx_core.model import rope as rope_module
from tiny import diffusers_transformer, random_state_dict, tiny_transformer_config

pytestmark = pytest.mark.parity

TOL = 1e-5
CONTROL = 1e-2  # a negative control must move the output at least this far (1000× the tolerance)
LATENT = (3, 4, 5)  # latent frames, height, width → 60 tokens
TEXT_LEN = 7


def _diffusers_model(cfg: TransformerConfig):
    pytest.importorskip("diffusers")
    return diffusers_transformer(cfg)


def _official_model(cfg: TransformerConfig):
    t3d = pytest.importorskip("ltx_video.models.transformers.transformer3d")
    metadata = {k: v for k, v in cfg.to_metadata().items() if not k.startswith("_")}
    return t3d.Transformer3DModel(**metadata).eval()


class Models:
    """Our model and both references, all holding the same random weights."""

    def __init__(self, cfg: TransformerConfig, seed: int = 0, dtype: torch.dtype = torch.float32):
        self.cfg = cfg
        self.diffusers = _diffusers_model(cfg)
        diffusers_sd = random_state_dict({k: v.shape for k, v in self.diffusers.state_dict().items()}, seed)
        self.diffusers.load_state_dict(diffusers_sd, strict=True)
        original_sd = transformer_from_diffusers(diffusers_sd)
        self.official = _official_model(cfg)
        self.official.load_state_dict(original_sd, strict=True)
        self.ours = LTXVideoTransformer.from_state_dict(cfg, dict(original_sd))
        for model in (self.diffusers, self.official, self.ours):
            model.to(dtype)


def _inputs(cfg: TransformerConfig, *, per_token: bool, seed: int = 1, batch: int = 2):
    gen = torch.Generator().manual_seed(seed)
    n = LATENT[0] * LATENT[1] * LATENT[2]
    x = torch.randn(batch, n, cfg.in_channels, generator=gen)
    context = torch.randn(batch, TEXT_LEN, cfg.caption_channels, generator=gen)
    mask = torch.ones(batch, TEXT_LEN)
    mask[1, 3:] = 0  # second prompt is padded
    if per_token:
        sigma = torch.rand(batch, n, generator=gen)
        sigma[:, : LATENT[1] * LATENT[2]] = 0.0  # first latent frame clean, as in image conditioning
    else:
        sigma = torch.tensor([0.93, 0.41])[:batch]
    return x, sigma, context, mask


def _run_ours(models, x, sigma, context, mask, positions):
    with torch.no_grad():
        return models.ours(x, sigma, context, mask, positions)


def _run_official(models, x, sigma, context, mask, positions):
    with torch.no_grad():
        return models.official(
            hidden_states=x,
            indices_grid=positions.expand(x.shape[0], -1, -1),
            encoder_hidden_states=context,
            timestep=sigma,
            encoder_attention_mask=mask,
            return_dict=False,
        )[0]


def _run_diffusers(models, x, sigma, context, mask, positions):
    with torch.no_grad():
        return models.diffusers(
            hidden_states=x,
            encoder_hidden_states=context,
            timestep=sigma * 1000,
            encoder_attention_mask=mask,
            video_coords=positions.expand(x.shape[0], -1, -1),
            return_dict=False,
        )[0]


CASES = [
    # heads, head_dim (hidden % 6 = 2, 0, 4, 2), per-token timesteps, causal fix, frame rate
    pytest.param(2, 16, False, False, 25.0, id="global-t-D32-fps25"),
    pytest.param(2, 16, True, False, 25.0, id="per-token-t-D32"),
    pytest.param(2, 12, False, True, 24.0, id="D24-no-padding-causal-fps24"),
    pytest.param(2, 14, True, True, 25.0, id="D28-pad4-per-token-causal"),
    pytest.param(4, 8, True, False, 24.0, id="D32-4heads-fps24"),
]


@pytest.mark.parametrize(("heads", "head_dim", "per_token", "causal", "fps"), CASES)
def test_matches_both_references(heads, head_dim, per_token, causal, fps):
    cfg = tiny_transformer_config(heads=heads, head_dim=head_dim, causal=causal)
    models = Models(cfg)
    x, sigma, context, mask = _inputs(cfg, per_token=per_token)
    positions = video_positions(*LATENT, frame_rate=fps, causal_fix=causal)
    ours = _run_ours(models, x, sigma, context, mask, positions)
    official = _run_official(models, x, sigma, context, mask, positions)
    diffusers_out = _run_diffusers(models, x, sigma, context, mask, positions)
    assert ours.abs().mean() > 0.1  # a meaningful signal, not a near-zero output
    assert (ours - official).abs().max() <= TOL
    assert (ours - diffusers_out).abs().max() <= TOL


def test_matches_diffusers_rope_interpolation_path():
    # diffusers' LTXPipeline passes the latent grid and (8/fps, 32, 32) instead of coordinates.
    cfg = tiny_transformer_config()
    models = Models(cfg)
    x, sigma, context, mask = _inputs(cfg, per_token=False)
    fps = 25.0
    with torch.no_grad():
        reference = models.diffusers(
            hidden_states=x,
            encoder_hidden_states=context,
            timestep=sigma * 1000,
            encoder_attention_mask=mask,
            num_frames=LATENT[0],
            height=LATENT[1],
            width=LATENT[2],
            rope_interpolation_scale=(8 / fps, 32, 32),
            return_dict=False,
        )[0]
    ours = _run_ours(models, x, sigma, context, mask, video_positions(*LATENT, frame_rate=fps, causal_fix=False))
    assert (ours - reference).abs().max() <= TOL


def test_positions_match_official_coordinates():
    vae_encode = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")
    patchifier = pytest.importorskip("ltx_video.models.transformers.symmetric_patchifier")
    latent = patchifier.SymmetricPatchifier(patch_size=1).get_latent_coords(*LATENT, 1, "cpu")
    for causal in (False, True):
        pixel = vae_encode.latent_to_pixel_coords_from_factors(latent, (8, 32, 32), causal_fix=causal).float()
        pixel[:, 0] = pixel[:, 0] * (1.0 / 25.0)
        assert torch.equal(video_positions(*LATENT, frame_rate=25.0, causal_fix=causal), pixel)


# --- negative controls: each plausible mistake moves the output far beyond the tolerance ---------


def _reference_and_ours(cfg, *, per_token=False, causal=False, fps=25.0):
    models = Models(cfg)
    x, sigma, context, mask = _inputs(cfg, per_token=per_token)
    positions = video_positions(*LATENT, frame_rate=fps, causal_fix=causal)
    reference = _run_official(models, x, sigma, context, mask, positions)
    return models, (x, sigma, context, mask), positions, reference


def test_control_wrong_rope_order_is_caught(monkeypatch: pytest.MonkeyPatch):
    cfg = tiny_transformer_config()
    models, inputs, positions, reference = _reference_and_ours(cfg)
    good = rope_module.rope_tables

    def axis_major_tables(positions, dim, theta, max_pos):
        cos, sin = good(positions, dim, theta, max_pos)
        pad = (dim % 6) // 2

        # regroup the bands axis-major: [t0, t1, …, y0, y1, …, x0, …] instead of [t0, y0, x0, t1, …]
        def regroup(table):
            body = table[..., pad:].unflatten(-1, (-1, 3)).transpose(-1, -2).flatten(-2)
            return torch.cat([table[..., :pad], body], dim=-1)

        return regroup(cos), regroup(sin)

    import ltx_core.model.transformer as transformer_module

    monkeypatch.setattr(transformer_module, "rope_tables", axis_major_tables)
    wrong = _run_ours(models, *inputs, positions)
    assert (wrong - reference).abs().max() > CONTROL


def test_control_ignored_text_mask_is_caught():
    cfg = tiny_transformer_config()
    models, (x, sigma, context, mask), positions, reference = _reference_and_ours(cfg)
    wrong = _run_ours(models, x, sigma, context, None, positions)
    assert (wrong[0] - reference[0]).abs().max() <= TOL  # unpadded prompt unaffected
    assert (wrong[1] - reference[1]).abs().max() > CONTROL


@pytest.mark.parametrize(
    ("ours_positions", "why"),
    [
        (dict(frame_rate=25.0, causal_fix=True), "causal fix applied where the reference has none"),
        (dict(frame_rate=24.0, causal_fix=False), "frame rate 24 instead of 25"),
    ],
)
def test_control_wrong_positions_are_caught(ours_positions, why):
    cfg = tiny_transformer_config()
    models, inputs, _, reference = _reference_and_ours(cfg)
    wrong = _run_ours(models, *inputs, video_positions(*LATENT, **ours_positions))
    assert (wrong - reference).abs().max() > CONTROL, why


def test_control_global_vs_per_token_timesteps_differ():
    cfg = tiny_transformer_config()
    models, (x, sigma, context, mask), positions, reference = _reference_and_ours(cfg)
    per_token = sigma[:, None].expand(-1, x.shape[1]).clone()
    same = _run_ours(models, x, per_token, context, mask, positions)
    assert (same - reference).abs().max() <= TOL  # a constant per-token sigma is the global one
    per_token[:, :10] = 0.0
    assert (_run_ours(models, x, per_token, context, mask, positions) - reference).abs().max() > CONTROL


# --- reduced precision ----------------------------------------------------------------------------


def test_bfloat16_stays_close_to_float32():
    """bf16 weights and activations (RoPE and timesteps still float32).

    Stated tolerance against float32: mean |error| ≤ 2 % and max |error| ≤ 10 % of the mean |output|
    (measured on this tiny sharp-attention model: 1.0 % and 6.7 %). Against diffusers run in bf16,
    which also rotates in float32: ≤ 0.1 % (measured: identical).
    """
    cfg = tiny_transformer_config(heads=4, head_dim=16)
    x, sigma, context, mask = _inputs(cfg, per_token=True)
    positions = video_positions(*LATENT, frame_rate=25.0, causal_fix=False)
    full = _run_ours(Models(cfg), x, sigma, context, mask, positions)
    models = Models(cfg, dtype=torch.bfloat16)
    args = (x.bfloat16(), sigma, context.bfloat16(), mask, positions)
    half = _run_ours(models, *args)
    assert half.dtype == torch.bfloat16
    scale = full.abs().mean()
    error = (half.float() - full).abs()
    assert error.mean() <= 0.02 * scale
    assert error.max() <= 0.10 * scale
    assert (half.float() - _run_diffusers(models, *args).float()).abs().max() <= 1e-3 * scale


def test_config_dataclass_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_transformer_config().num_layers = 3
