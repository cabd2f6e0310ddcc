"""The ops seam: a model's ops are chosen in one place and reach every module; every elementwise step
and attention goes through them; the choice is logged and described."""

from __future__ import annotations

import logging

import torch

from ltx_core import LTXVideoTransformer, VAEConfig, VideoVAE
from ltx_core.memory import placed
from ltx_core.model import fusion, ops
from ltx_core.model.fp8 import quantize_linears
from ltx_core.model.ops import FUSED, PLAIN, Ops, UsesOps, choose_ops, describe_ops, ops_of, use_ops
from tiny import TINY_VAE_LAYOUTS, random_state_dict, random_vae_state_dict, tiny_transformer_config


class Recording(Ops):
    """Plain ops that note which steps and blocks the model asked them for."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, step, *args):  # noqa: ANN001, ANN201
        self.calls.append(step.__name__)
        return super().run(step, *args)

    def attention(self, *args):  # noqa: ANN002, ANN201
        self.calls.append("attention")
        return super().attention(*args)


def _transformer() -> LTXVideoTransformer:
    cfg = tiny_transformer_config(heads=2, head_dim=16, layers=2)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return LTXVideoTransformer.from_state_dict(cfg, random_state_dict(shapes, seed=4))


def _inputs(cfg):
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 12, cfg.in_channels, generator=gen),
        torch.tensor([0.3, 0.8]),
        torch.randn(2, 5, cfg.caption_channels, generator=gen),
        torch.ones(2, 5),
        torch.rand(1, 3, 12, generator=gen) * 8,
    )


def test_choice_depends_on_the_device_and_the_fusion_switch():
    assert choose_ops("cpu") is PLAIN
    fusion.set_fusion(True, devices=("cpu",))
    try:
        assert choose_ops("cpu") is FUSED
    finally:
        fusion.set_fusion(True)
    fusion.set_fusion(False)
    try:
        assert choose_ops("cuda") is PLAIN
    finally:
        fusion.set_fusion(True)


def test_every_step_of_the_transformer_goes_through_its_ops():
    model = _transformer()
    inputs = _inputs(model.config)
    with torch.no_grad():
        plain = model(*inputs)
        recording = Recording()
        use_ops(model, recording)
        assert all(m.ops is recording for m in model.modules() if isinstance(m, UsesOps))
        assert torch.equal(model(*inputs), plain)
    steps = {"modulated_rms_norm", "gated_residual", "add_then_modulated_rms_norm", "rms_norm_rope_qk", "attention"}
    assert set(recording.calls) == steps
    assert recording.calls.count("attention") == 2 * 2  # self and cross, per block


def test_every_step_of_the_vae_decoder_goes_through_its_ops():
    config = VAEConfig.from_metadata(TINY_VAE_LAYOUTS["0.9.1"][0])
    with torch.device("meta"):
        vae = VideoVAE(config)
    vae.load_state_dict(random_vae_state_dict({k: v.shape for k, v in vae.state_dict().items()}, 3), assign=True)
    latents = torch.randn(1, config.latent_channels, 2, 2, 2)
    with torch.no_grad():
        plain = vae.decode(latents, 0.05, tiling="off", generator=torch.Generator().manual_seed(1))
        recording = Recording()
        use_ops(vae, recording)
        decoded = vae.decode(latents, 0.05, tiling="off", generator=torch.Generator().manual_seed(1))
    assert torch.equal(decoded, plain)
    assert {"_norm_silu_pad", "_add_noise_and_skip", "unfold_and_skip", "add_bias_and_unpatchify"} <= set(
        recording.calls
    )


def test_placing_a_model_chooses_logs_and_describes_its_ops(caplog):
    model = _transformer()
    with caplog.at_level(logging.INFO, logger=ops.__name__):
        for _ in range(2):
            with placed(model, "cpu"):
                pass
    assert ops_of(model) is PLAIN
    described = [r.message for r in caplog.records if r.name == ops.__name__]
    assert len(described) == 1  # logged when the choice changed, not on every use
    assert described[0].startswith("LTXVideoTransformer: plain ops on cpu in float32")
    assert "linear layers: 27 float32" in described[0]
    quantize_linears(model)
    assert "20 fp8 matmul (e4m3, per-channel scales), 7 float32" in describe_ops(model)
