"""LoRAs: the pack equals diffusers' `load_lora_weights` (PEFT) on the same tiny model and the same file,
written by diffusers' own `save_lora_weights`; the same LoRA in ComfyUI's key formats gives the same
output; layers that expand their weight per call (fp8 storage, GGUF) equal the merged path on the same
base weights exactly, fp8 matmuls (a requantized copy of W + ΔW) within fp8 rounding and without losing
any of a weak LoRA; streamed blocks equal resident ones exactly; strength 0 and removal give the exact
base outputs; wrong keys, scales and sizes are caught."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from ltx_core import LTXVideoTransformer, video_positions
from ltx_core.loading.dequant import GGMLType
from ltx_core.loading.errors import CheckpointError
from ltx_core.loading.gguf import QuantizedTensor
from ltx_core.loading.keymaps import transformer_from_diffusers
from ltx_core.loading.quantized import QuantizedLinear
from ltx_core.lora import apply_loras, load_lora
from ltx_core.memory import placed, stream_on_cpu, streamer_for
from ltx_core.model.fp8 import quantize_linears, requantize_channels
from ltx_core.model.ops import describe_ops
from ltx_core.model.storage import linear_layers, replace_linear
from ltx_core.streaming import BlockStreamer
from tiny import diffusers_transformer, random_state_dict, tiny_transformer_config

TOL = 1e-5  # float32, as the transformer's own parity with diffusers
CONTROL = 1e-2  # a negative control must move the output at least this far
LATENT = (2, 3, 4)  # 24 tokens
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
RANK, ALPHA = 4, 8.0
ALPHA_PATTERN = {"to_out.0": 2.0}  # PEFT's per-module alpha: scale 0.5 there, 2.0 elsewhere
CFG = tiny_transformer_config(heads=2, head_dim=16, layers=2)


@pytest.fixture(scope="module")
def base_weights() -> dict[str, torch.Tensor]:
    """The tiny transformer's random weights, in diffusers' key names."""
    model = diffusers_transformer(CFG)
    return random_state_dict({k: v.shape for k, v in model.state_dict().items()}, seed=0)


def _ours(base_weights: dict[str, torch.Tensor]) -> LTXVideoTransformer:
    return LTXVideoTransformer.from_state_dict(CFG, transformer_from_diffusers(base_weights))


def _diffusers(base_weights: dict[str, torch.Tensor]):
    model = diffusers_transformer(CFG)
    model.load_state_dict(base_weights, strict=True)
    return model


def _write_peft_lora(base_weights, folder, name: str, seed: int) -> str:
    """A LoRA made by PEFT on diffusers' model and written by diffusers' save_lora_weights (with its
    PEFT config, alpha and alpha_pattern, in the file's metadata)."""
    from diffusers import LTXPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = _diffusers(base_weights)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, alpha_pattern=ALPHA_PATTERN, target_modules=TARGETS)
    model.add_adapter(config, adapter_name=name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if ".lora_" in key:  # PEFT starts lora_B at zero; both random here, of a LoRA's usual size
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3 / math.sqrt(param.shape[1]))
    layers = get_peft_model_state_dict(model, adapter_name=name)
    LTXPipeline.save_lora_weights(
        folder, transformer_lora_layers=layers, transformer_lora_adapter_metadata=config.to_dict(),
        weight_name=f"{name}.safetensors",
    )  # fmt: skip
    return str(folder / f"{name}.safetensors")


@pytest.fixture(scope="module")
def lora_files(base_weights, tmp_path_factory) -> dict[str, str]:
    pytest.importorskip("peft")
    folder = tmp_path_factory.mktemp("loras")
    return {name: _write_peft_lora(base_weights, folder, name, seed) for name, seed in (("style", 1), ("motion", 2))}


def _inputs():
    gen = torch.Generator().manual_seed(3)
    tokens = math.prod(LATENT)
    x = torch.randn(2, tokens, CFG.in_channels, generator=gen)
    context = torch.randn(2, 5, CFG.caption_channels, generator=gen)
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    positions = video_positions(*LATENT, frame_rate=25.0, causal_fix=False)
    return x, torch.tensor([0.9, 0.4]), context, mask, positions


def _run(model, inputs=None):
    x, sigma, context, mask, positions = inputs or _inputs()
    dtype = model.dtype
    with torch.no_grad():
        return model(x.to(dtype), sigma, context.to(dtype), mask, positions)


def _run_diffusers(model):
    x, sigma, context, mask, positions = _inputs()
    with torch.no_grad():
        return model(
            hidden_states=x, encoder_hidden_states=context, timestep=sigma * 1000, encoder_attention_mask=mask,
            video_coords=positions.expand(2, -1, -1), return_dict=False,
        )[0]  # fmt: skip


def _diffusers_with(base_weights, files, strengths):
    from diffusers.loaders import LTXVideoLoraLoaderMixin

    class Pipeline(LTXVideoLoraLoaderMixin):
        """What LTXPipeline's load_lora_weights needs of a pipeline, around a bare transformer."""

        hf_device_map = None

        def __init__(self, transformer) -> None:
            self.transformer = transformer
            self.components = {"transformer": transformer}

    model = _diffusers(base_weights)
    pipeline = Pipeline(model)
    names = list(files)
    for name in names:
        pipeline.load_lora_weights(files[name], adapter_name=name)
    model.set_adapters(names, strengths)
    return model


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")  # a second adapter, on purpose
@pytest.mark.parametrize(
    "strengths", [{"style": 1.0}, {"style": 0.7}, {"style": 0.7, "motion": -0.4}], ids=["one", "strength", "stacked"]
)
def test_peft_lora_equals_diffusers(base_weights, lora_files, strengths):
    files = {name: lora_files[name] for name in strengths}
    reference = _run_diffusers(_diffusers_with(base_weights, files, list(strengths.values())))
    model = _ours(base_weights)
    base = _run(model)
    assert (base - _run_diffusers(_diffusers(base_weights))).abs().max() <= TOL  # the same base model
    apply_loras(model, [(files[name], strength) for name, strength in strengths.items()])
    ours = _run(model)
    assert (ours - reference).abs().max() <= TOL
    assert (ours - base).abs().max() >= CONTROL  # the LoRA does change the output


def _original_module(key: str) -> str:
    """`transformer.<diffusers module>.lora_X.weight` → the module's original (ComfyUI) name."""
    module = key.removeprefix("transformer.").rsplit(".lora_", 1)[0]
    return next(iter(transformer_from_diffusers({module: None})))


def _alpha(module: str) -> float:
    """The alpha PEFT's config gives `module` (see ALPHA_PATTERN), for a file that states it per module."""
    return next((a for pattern, a in ALPHA_PATTERN.items() if module.endswith(f".{pattern}")), ALPHA)


def _as_comfyui(path: str, family: str, alphas: bool = True) -> dict[str, torch.Tensor]:
    """The PEFT file's tensors rewritten by hand in one of ComfyUI's key formats, with `.alpha` per module."""
    from safetensors.torch import load_file

    names = {
        "lora_down": ("diffusion_model.{}.lora_down.weight", "diffusion_model.{}.lora_up.weight"),
        "lora_A": ("diffusion_model.{}.lora_A.weight", "diffusion_model.{}.lora_B.weight"),  # Lightricks' files
        "kohya": ("lora_unet_{}.lora_down.weight", "lora_unet_{}.lora_up.weight"),  # dots as underscores
    }[family]
    out = {}
    for key, tensor in load_file(path).items():
        module = _original_module(key)
        stem = module.replace(".", "_") if family == "kohya" else module
        out[names[".lora_B." in key].format(stem)] = tensor
        if alphas:
            out[names[0].format(stem).removesuffix(".lora_down.weight").removesuffix(".lora_A.weight") + ".alpha"] = (
                torch.tensor(_alpha(module))
            )
    return out


@pytest.mark.parametrize("family", ["lora_down", "lora_A", "kohya"])
def test_the_same_lora_in_comfyui_keys_gives_the_same_output(base_weights, lora_files, tmp_path, family):
    model = _ours(base_weights)
    apply_loras(model, [(lora_files["style"], 0.8)])
    peft = _run(model)
    path = tmp_path / "style-comfyui.safetensors"
    save_file(_as_comfyui(lora_files["style"], family), str(path))
    stack = apply_loras(model, [(path, 0.8)])
    assert torch.equal(_run(model), peft)
    assert stack.entries[0][0].format.startswith("ComfyUI" if family != "lora_A" else "diffusers")


@pytest.mark.parity
def test_comfyui_keys_without_alpha_equal_diffusers_reading_them(base_weights, lora_files, tmp_path):
    """Original keys under `diffusion_model.` with lora_A / lora_B and no alpha, which diffusers' LTX
    loader converts itself (blocks only: it does not rename patchify_proj)."""
    tensors = _as_comfyui(lora_files["style"], "lora_A", alphas=False)
    tensors = {k: v for k, v in tensors.items() if "patchify_proj" not in k}
    path = tmp_path / "style-lightricks.safetensors"
    save_file(tensors, str(path))
    reference = _run_diffusers(_diffusers_with(base_weights, {"style": str(path)}, [0.9]))
    model = _ours(base_weights)
    apply_loras(model, [(path, 0.9)])
    assert (_run(model) - reference).abs().max() <= TOL
    apply_loras(model, [(lora_files["style"], 0.9)])  # the scales the PEFT file states make a difference
    assert (_run(model) - reference).abs().max() >= CONTROL


def test_strength_zero_and_removal_give_the_exact_base(base_weights, lora_files):
    model = _ours(base_weights)
    base = _run(model)
    stack = apply_loras(model, [(lora_files["style"], 0.0)])
    assert torch.equal(_run(model), base)
    stack.set([(lora_files["style"], 1.0), (lora_files["motion"], 0.5)])
    both = _run(model)
    stack.set_strength("motion.safetensors", 0.0)
    only_style = _run(model)
    stack.set_strength(1, 0.5)
    assert torch.equal(_run(model), both)  # changed and changed back: the same numbers
    stack.remove()
    assert torch.equal(_run(model), base)
    assert not torch.equal(only_style, base) and not torch.equal(only_style, both)
    assert all(layer.lora_up is None for _, layer in linear_layers(model))  # nothing left behind


# --- other storages: fp8 storage, fp8 matmul, GGUF Q8_0; streamed blocks --------------------------------


def _fp8_stored(base_weights) -> LTXVideoTransformer:
    """fp8 block weights computed in float32, so that only the LoRA's application differs from the merge."""

    def rule(key: str, tensor: torch.Tensor) -> torch.dtype:
        fp8 = key.startswith("transformer_blocks.") and key.endswith(".weight") and tensor.ndim == 2
        return torch.float8_e4m3fn if fp8 else torch.float32

    return LTXVideoTransformer.from_state_dict(CFG, transformer_from_diffusers(base_weights), dtype=rule)


def _q8_0(module) -> QuantizedLinear:
    blocks = module.weight.detach().reshape(-1, 32)  # Q8_0: per 32 values an fp16 scale and 32 int8
    scale = (blocks.abs().amax(dim=1, keepdim=True) / 127).half()
    q = torch.round(blocks / scale.float()).clamp(-127, 127).to(torch.int8)
    raw = torch.cat([scale.view(torch.uint8), q.view(torch.uint8)], dim=1).reshape(-1)
    return QuantizedLinear(QuantizedTensor(raw, GGMLType.Q8_0, module.weight.shape), module.bias)


def _gguf(base_weights) -> LTXVideoTransformer:
    model = _ours(base_weights)
    for name, module in linear_layers(model, "transformer_blocks."):
        replace_linear(model, name, _q8_0(module))
    return model


def _fp8_matmul(base_weights) -> LTXVideoTransformer:
    model = _ours(base_weights)
    quantize_linears(model)
    return model


STORAGES = {"fp8": _fp8_stored, "fp8_matmul": _fp8_matmul, "gguf_q8_0": _gguf}


def _dense_copy(model: LTXVideoTransformer) -> LTXVideoTransformer:
    """A float32 model holding `model`'s weights as it expands them, in plain Linear layers (merged LoRA)."""
    weights = {}
    probe = torch.zeros(1, dtype=torch.float32)
    for name, layer in linear_layers(model):
        weights[f"{name}.weight"] = layer.dense_weight(probe)
        if layer.bias is not None:
            weights[f"{name}.bias"] = layer.bias.float()
    with torch.device("meta"):
        expected = LTXVideoTransformer(CFG).state_dict()
    held = model.state_dict()
    rest = {k: held[k].float() for k in expected if k not in weights}
    return LTXVideoTransformer.from_state_dict(CFG, {**rest, **weights})


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / b.abs().mean()).item()


LORAS = (("style", 0.8), ("motion", -0.5))


def _loras(lora_files, scale: float = 1.0) -> list[tuple[str, float]]:
    return [(lora_files[name], strength * scale) for name, strength in LORAS]


def _stored(model: LTXVideoTransformer) -> dict[str, torch.Tensor]:
    """A copy of every tensor the model holds (GGML bytes and fp8 values included), but what LoRAs add."""
    held = (*model.named_parameters(), *model.named_buffers())
    return {name: t.detach().clone() for name, t in held if not name.rsplit(".", 1)[-1].startswith("lora_")}


def _float_outputs(base_weights, lora_files) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 model's outputs without and with the LoRAs: what the bounds below measure from."""
    float32 = _ours(base_weights)
    float_base = _run(float32)
    apply_loras(float32, _loras(lora_files))
    return float_base, _run(float32)


@pytest.mark.parametrize("storage", ["fp8", "gguf_q8_0"])
def test_merged_into_the_weight_expanded_per_call(base_weights, lora_files, storage):
    """Layers that expand W per call add ΔW into that expansion: exactly the numbers of a float32 model
    holding the same expanded weights with the LoRAs merged. Against the original float weights, the
    LoRA'd model is as far from float32 as the storage's rounding of W puts the base model (fp8 4.4 %,
    Q8_0 0.8 % here; with the LoRAs 1.00× and 1.10× that): the LoRA adds no error of its own, so 1.5×
    bounds it. The stored weights are never written."""
    model = STORAGES[storage](base_weights)
    stored = _stored(model)
    merged = _dense_copy(model)
    base = _run(model)
    apply_loras(model, _loras(lora_files))
    apply_loras(merged, _loras(lora_files))
    assert "merged into the weight expanded per call" in describe_ops(model)
    out = _run(model)
    assert torch.equal(out, _run(merged))
    float_base, float_lora = _float_outputs(base_weights, lora_files)
    assert _relative(out, float_lora) <= 1.5 * _relative(base, float_base)
    apply_loras(model, [])
    assert torch.equal(_run(model), base)
    assert all(torch.equal(t, stored[name]) for name, t in _stored(model).items())


def test_a_gguf_f32_layer_is_never_written(base_weights, lora_files):
    """F32 blocks dequantized to float32 are the stored bytes themselves: ΔW goes into a new tensor."""
    model = _ours(base_weights)
    name, layer = next(linear_layers(model, "transformer_blocks."))
    raw = layer.weight.detach().contiguous().view(torch.uint8).reshape(-1).clone()
    replace_linear(model, name, QuantizedLinear(QuantizedTensor(raw, GGMLType.F32, layer.weight.shape), layer.bias))
    base = _run(model)
    apply_loras(model, _loras(lora_files))
    once = _run(model)
    assert torch.equal(_run(model), once) and torch.equal(model.get_submodule(name).weight_raw, raw)
    apply_loras(model, [])
    assert torch.equal(_run(model), base)


def test_fp8_matmul_multiplies_a_requantized_copy(base_weights, lora_files):
    """fp8 matmuls multiply by W + ΔW requantized per channel, made once when the LoRAs are set, against
    the same e4m3 W with the LoRAs merged exactly (what adding x·Aᵀ·Bᵀ at use computes): within fp8
    rounding. Per weight, stochastic rounding has at most 3× the variance of rounding to the nearest (√3×
    its error), and this strong stack (ΔW 15 % of W) moves most weights off the grid: the LoRA'd model is
    1.5–1.9× as far from the exact one as the storage's rounding puts the base model from float32, and
    1.8–2.3× from the float LoRA'd model (over six noise seeds; 1.5× at a tenth of the strength), so
    2.25× and 2.5× bound them. W is never written: removal drops the copy, and the same LoRAs make the
    same copy again."""
    model = STORAGES["fp8_matmul"](base_weights)
    stored = _stored(model)
    exact = _dense_copy(model)
    base = _run(model)
    stack = apply_loras(model, _loras(lora_files))
    apply_loras(exact, _loras(lora_files))
    assert "merged into a requantized fp8 copy" in describe_ops(model)
    out = _run(model)
    float_base, float_lora = _float_outputs(base_weights, lora_files)
    rounding = _relative(base, float_base)
    assert _relative(out, _run(exact)) <= 2.25 * rounding and _relative(out, float_lora) <= 2.5 * rounding
    stack.set_strength(1, 0.3)
    stack.set_strength(1, -0.5)
    assert torch.equal(_run(model), out)
    stack.remove()
    assert torch.equal(_run(model), base)
    assert _stored(model).keys() == stored.keys()  # the requantized copies are gone with the LoRAs
    assert all(torch.equal(t, stored[name]) for name, t in _stored(model).items())


def test_fp8_matmul_keeps_all_of_a_weak_lora(base_weights, lora_files):
    """W is on the e4m3 grid already, so rounding W + ΔW to the nearest value gives W back wherever ΔW is
    under half a step: much of a weak LoRA would be lost (the control: 41 % of this one, whose ΔW is 1.5 %
    of W). Rounded stochastically, all of it is kept on average (measured 0.998 over the blocks' layers;
    0.84 to 1.13 per layer, of 1,024 to 4,096 weights)."""
    model = STORAGES["fp8_matmul"](base_weights)
    apply_loras(model, _loras(lora_files, scale=0.1))
    probe = torch.zeros(1)
    kept, nearest, size = 0.0, 0.0, 0.0
    for _, layer in linear_layers(model, "transformer_blocks."):
        weight = layer.dense_weight(probe)
        delta = layer.lora_up.float() @ layer.lora_down.float()
        values, scale = requantize_channels(weight + delta, layer.weight_scale, noise=None)
        kept += ((layer.weight_like(probe) - weight) * delta).sum().item()
        nearest += ((values.float() * scale[:, None] - weight) * delta).sum().item()
        size += (delta * delta).sum().item()
    assert abs(kept / size - 1) <= 0.03
    assert nearest / size <= 0.7  # the control: nearest rounding loses much of this LoRA


@pytest.mark.parametrize("storage", ["float32", *STORAGES])
def test_streamed_blocks_equal_resident_ones_with_loras(base_weights, lora_files, storage):
    model = _ours(base_weights) if storage == "float32" else STORAGES[storage](base_weights)
    stack = apply_loras(model, [(lora_files["style"], 1.0)])
    resident = _run(model)
    streamer = BlockStreamer(model, model.transformer_blocks)
    with streamer.active("cpu"):
        assert torch.equal(_run(model), resident)  # the factors travel with their blocks
    stack.set([(lora_files["style"], 0.5)])  # a new streamer packs the new factors
    half = _run(model)
    with BlockStreamer(model, model.transformer_blocks).active("cpu"):
        assert torch.equal(_run(model), half)
    assert not torch.equal(half, resident)


@pytest.fixture
def cpu_streaming():
    stream_on_cpu(True)
    yield
    stream_on_cpu(False)


def test_changing_loras_repacks_a_low_vram_model(base_weights, lora_files, cpu_streaming):
    model = _ours(base_weights)
    stack = apply_loras(model, [(lora_files["style"], 1.0)])
    with placed(model, "cpu", "low_vram", keep_pinned=True):
        first = _run(model)
        packed = streamer_for(model)
        with pytest.raises(RuntimeError, match="while the model runs with its blocks streamed"):
            stack.set([])
    stack.set([(lora_files["motion"], 1.0)])
    assert streamer_for(model) is not packed  # the old packed copies (with the old factors) were dropped
    with placed(model, "cpu", "low_vram"):
        streamed = _run(model)
    resident = _run(model)
    assert torch.equal(streamed, resident) and not torch.equal(streamed, first)


# --- negative controls and errors -----------------------------------------------------------------------


def _rewritten(path: str, rename) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {rename(k): v for k, v in load_file(path).items()}


def test_a_wrong_key_map_or_scale_is_caught(base_weights, lora_files, tmp_path):
    model = _ours(base_weights)
    apply_loras(model, [(lora_files["style"], 1.0)])
    right = _run(model)
    swapped = _rewritten(lora_files["style"], lambda k: k.replace(".to_q.", ".to_X.").replace(".to_k.", ".to_q.")
                         .replace(".to_X.", ".to_k."))  # fmt: skip
    apply_loras(model, [(swapped, 1.0)])
    assert (_run(model) - right).abs().max() >= CONTROL
    unscaled = load_lora(lora_files["style"])  # the file's PEFT alphas ignored: scale 1
    unscaled.modules.update({k: type(m)(m.down, m.up, 1.0) for k, m in unscaled.modules.items()})
    apply_loras(model, [(unscaled, 1.0)])
    assert (_run(model) - right).abs().max() >= CONTROL


def test_errors_name_the_file_and_what_is_wrong(base_weights, lora_files, tmp_path):
    model = _ours(base_weights)
    checkpoint = tmp_path / "ltxv-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    with pytest.raises(CheckpointError, match=r"ltxv-tiny\.safetensors: is not a LoRA \(its keys: "):
        apply_loras(model, [(checkpoint, 1.0)])

    wrong = tmp_path / "attn3.safetensors"
    save_file(_rewritten(lora_files["style"], lambda k: k.replace(".attn1.", ".attn3.")), str(wrong))
    with pytest.raises(CheckpointError, match=r"attn3\.safetensors: has 8 of 22 modules that match no linear "
                       r"layer of this model \(transformer_blocks\.0\.attn3\.to_k, "):  # fmt: skip
        apply_loras(model, [(wrong, 1.0)])

    deeper = tmp_path / "deeper.safetensors"
    save_file(_rewritten(lora_files["style"], lambda k: k.replace("blocks.1.", "blocks.5.")), str(deeper))
    with pytest.raises(CheckpointError, match=r"names blocks up to 5, and this model has blocks 0 … 1"):
        apply_loras(model, [(deeper, 1.0)])

    wider = {k.replace("lora_A", "lora_down").replace("lora_B", "lora_up"): torch.zeros(4, 64) if "lora_A" in k
             else torch.zeros(64, 4) for k in _rewritten(lora_files["style"], str) if ".attn1.to_q." in k}  # fmt: skip
    with pytest.raises(CheckpointError, match=r"LoRA state dict: is a LoRA for another model size: "
                       r"transformer_blocks\.0\.attn1\.to_q is 64→64 in the LoRA, 32→32 here"):  # fmt: skip
        apply_loras(model, [(wider, 1.0)])

    dora = {**_rewritten(lora_files["style"], str), "transformer.proj_in.lora_magnitude_vector": torch.ones(32)}
    with pytest.raises(CheckpointError, match="holds DoRA weights"):
        apply_loras(model, [(dora, 1.0)])
    base = _ours(base_weights)
    assert torch.equal(_run(model), _run(base))  # every refusal left the model as it was
