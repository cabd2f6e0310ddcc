"""T5 text conditioning: tokenizer parity with transformers, every checkpoint format against
transformers' T5EncoderModel on the same weights, the encoder mask, and the error messages."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ltx_core.loading.errors import CheckpointError
from ltx_core.loading.keymaps import T5_GGUF_BLOCK, T5_GGUF_TOP, t5_from_gguf_name
from ltx_core.loading.quantized import Fp8WeightLinear
from ltx_core.loading.text_encoder import load_text_encoder, tokenizer_beside
from ltx_core.memory import module_bytes
from ltx_core.text import Conditioning, load_tokenizer
from tiny import TOKENIZER_WORDS, tiny_t5_config, train_tiny_spiece

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

WORDS = TOKENIZER_WORDS
PROMPTS = [
    "  a red fox jumps over the lazy dog  ",
    "Neon signs reflect, on WET pavement at night!",
    "",
    " ".join(WORDS * 4),  # longer than 128 tokens: truncated, still ending in </s>
]
L = 32  # encoder tests use short sequences; the tokenizer tests use the default 128


# --- a tiny SentencePiece model and the transformers tokenizer built from it --------------------------


def _proto_fields(data: bytes):
    """(field number, value) pairs of a protobuf message; enough to read one bytes field."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        kind = key & 7
        if kind == 0:
            value, i = _varint(data, i)
        elif kind == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        else:
            size = {1: 8, 5: 4}[kind]
            value, i = data[i : i + size], i + size
        yield key >> 3, value


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return value, i


@pytest.fixture(scope="module")
def spm_proto() -> bytes:
    return train_tiny_spiece()


@pytest.fixture(scope="module")
def hf_tokenizer(spm_proto):
    """transformers' T5Tokenizer from the same pieces, scores and normalizer (what its converter does)."""
    processor = sentencepiece.SentencePieceProcessor(model_proto=spm_proto)
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    normalizer = next(v for f, v in _proto_fields(spm_proto) if f == 3)  # ModelProto.normalizer_spec
    charsmap = next(v for f, v in _proto_fields(normalizer) if f == 2)  # .precompiled_charsmap
    return transformers.T5Tokenizer(vocab=vocab, _spm_precompiled_charsmap=charsmap)


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory, spm_proto, hf_tokenizer):
    """{"spiece": folder with spiece.model, "json": folder with tokenizer.json (+ transformers' extras)}."""
    root = tmp_path_factory.mktemp("tokenizers")
    (root / "spiece").mkdir()
    (root / "spiece" / "spiece.model").write_bytes(spm_proto)
    hf_tokenizer.save_pretrained(root / "json")
    return {"spiece": root / "spiece", "json": root / "json"}


def test_tokenizer_matches_transformers(tokenizer_dirs, hf_tokenizer):
    for max_length in (128, 5):
        want = hf_tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        for folder in tokenizer_dirs.values():  # SentencePiece and tokenizer.json give the same ids
            ids, mask = load_tokenizer(folder)(PROMPTS, max_length)
            assert ids.shape == mask.shape == (4, max_length) and ids.dtype == mask.dtype == torch.int64
            assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    ids, mask = load_tokenizer(tokenizer_dirs["spiece"])(PROMPTS)  # default max_length 128
    assert ids[2, 0] == 1 and mask[2].sum() == 1  # empty prompt: only </s>
    assert mask[3].all() and ids[3, -1] == 1  # truncated: 127 tokens + </s>
    assert (ids[mask == 0] == 0).all() and mask[0].sum() < 128  # padded with id 0


def test_tokenizer_sources_by_content(tmp_path, tokenizer_dirs):
    reference, _ = load_tokenizer(tokenizer_dirs["spiece"])(PROMPTS)
    shutil.copy(tokenizer_dirs["spiece"] / "spiece.model", tmp_path / "t5.bin")  # any name: content decides
    shutil.copytree(tokenizer_dirs["json"], tmp_path / "diffusers" / "tokenizer")
    sources = [tmp_path / "t5.bin", tokenizer_dirs["json"] / "tokenizer.json", tmp_path / "diffusers"]
    for source in sources:
        assert torch.equal(load_tokenizer(source)(PROMPTS)[0], reference), source


def test_missing_tokenizer_says_what_and_where(tmp_path):
    with pytest.raises(CheckpointError) as error:
        load_tokenizer(tmp_path)
    assert str(error.value) == (
        f"{tmp_path.name}: has no T5 tokenizer (looked for spiece.model and tokenizer.json in {tmp_path}, "
        f"{tmp_path / 'tokenizer'}); expected T5's tokenizer (spiece.model or tokenizer.json). Pass T5's own "
        f"tokenizer (spiece.model or tokenizer.json of google/t5-v1_1-xxl) as tokenizer_path. (file: {tmp_path})"
    )


def test_tokenizers_that_are_not_t5s_are_refused(tmp_path, tokenizer_dirs):
    import tokenizers

    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"broken\.json: is not a readable tokenizer\.json .*Pass T5's own"):
        load_tokenizer(tmp_path / "broken.json")
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "fox": 1}, unk_token="[UNK]"))
    words.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="has no </s> or <pad> token, so it is not a T5 tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "junk.model").write_bytes(b"\x00\x01 not a sentencepiece model")
    with pytest.raises(CheckpointError, match="junk.model: is not a readable SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")


# --- a tiny T5 and its checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(hf_tokenizer):
    """A tiny T5 v1.1 encoder with random weights (non-trivial norms), float32, eval."""
    torch.manual_seed(0)
    model = transformers.T5EncoderModel(tiny_t5_config(len(hf_tokenizer))).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.copy_(1 + 0.2 * torch.randn_like(param))
    return model


def _weights(model) -> dict[str, torch.Tensor]:
    """The state dict as a ComfyUI single file stores it: independent tensors, embed_tokens left out."""
    return {k: v.clone() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def _reference_output(model, state_dict, hf_tokenizer, prompts=PROMPTS, mask_in_encoder=True) -> torch.Tensor:
    model = transformers.T5EncoderModel(model.config).eval()
    model.load_state_dict({**state_dict, "encoder.embed_tokens.weight": state_dict["shared.weight"]})
    batch = hf_tokenizer(prompts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
    with torch.no_grad():
        mask = batch["attention_mask"] if mask_in_encoder else None
        return model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state


def _check(path, reference_weights, reference, hf_tokenizer, atol=1e-5, **kwargs) -> None:
    encoder, detected = load_text_encoder(path, dtype=torch.float32, **kwargs)
    cond = encoder.encode(PROMPTS, max_length=L)
    want = _reference_output(reference, reference_weights, hf_tokenizer)
    assert cond.context.shape == (4, L, 32) and cond.mask.shape == (4, L)
    torch.testing.assert_close(cond.context, want, atol=atol, rtol=0)
    assert detected.config.num_heads == 4 and detected.config.d_kv == 8 and detected.config.num_layers == 2


def test_transformers_folder(tmp_path, reference, hf_tokenizer, tokenizer_dirs):
    reference.save_pretrained(tmp_path)
    shutil.copy(tokenizer_dirs["spiece"] / "spiece.model", tmp_path)
    _check(tmp_path, _weights(reference), reference, hf_tokenizer, atol=0)


def test_diffusers_folder_sharded(tmp_path, reference, hf_tokenizer, tokenizer_dirs):
    reference.save_pretrained(tmp_path / "text_encoder", max_shard_size="20KB")
    assert (tmp_path / "text_encoder" / "model.safetensors.index.json").is_file()
    shutil.copytree(tokenizer_dirs["json"], tmp_path / "tokenizer")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "LTXPipeline"}))
    _check(tmp_path, _weights(reference), reference, hf_tokenizer, atol=0)
    _check(tmp_path / "text_encoder", _weights(reference), reference, hf_tokenizer, atol=0)  # sibling tokenizer/


@pytest.mark.parametrize("prefix", ["", "text_encoders.t5xxl.transformer."])
@pytest.mark.parametrize("with_embed_tokens", [False, True])
def test_single_file(tmp_path, reference, hf_tokenizer, tokenizer_dirs, prefix, with_embed_tokens):
    weights = _weights(reference)
    stored = dict(weights)
    if with_embed_tokens:  # some files carry the tied copy, some only embed_tokens
        stored["encoder.embed_tokens.weight"] = stored.pop("shared.weight")
    save_file({prefix + k: v for k, v in stored.items()}, tmp_path / "t5xxl_fp32.safetensors")
    path = tmp_path / "t5xxl_fp32.safetensors"
    _check(path, weights, reference, hf_tokenizer, atol=0, tokenizer_path=tokenizer_dirs["spiece"])


def _fp8(weights: dict[str, torch.Tensor], scaled: bool) -> tuple[dict, dict]:
    """(file tensors, dequantized reference): 2-D linear weights in float8_e4m3fn, the rest float16."""
    stored, dequantized = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)} if scaled else {}, {}
    for key, value in weights.items():
        if value.ndim == 2 and "relative_attention_bias" not in key and key != "shared.weight":
            scale = value.abs().max() / 448 if scaled else torch.tensor(1.0)
            stored[key] = (value / scale).to(torch.float8_e4m3fn)
            dequantized[key] = stored[key].float() * scale
            if scaled:
                stored[key.removesuffix("weight") + "scale_weight"] = scale.reshape(())
        else:
            stored[key] = value.half()
            dequantized[key] = stored[key].float()
    return stored, dequantized


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_single_file(tmp_path, reference, hf_tokenizer, tokenizer_dirs, scaled):
    stored, dequantized = _fp8(_weights(reference), scaled)
    save_file(stored, tmp_path / "t5xxl_fp8_e4m3fn.safetensors")
    shutil.copytree(tokenizer_dirs["spiece"], tmp_path, dirs_exist_ok=True)  # tokenizer in the same folder
    _check(tmp_path / "t5xxl_fp8_e4m3fn.safetensors", dequantized, reference, hf_tokenizer)
    _, detected = load_text_encoder(tmp_path / "t5xxl_fp8_e4m3fn.safetensors")
    assert detected.stored_dtype == ("F8_E4M3 scaled" if scaled else "F8_E4M3")


def _gguf_name(key: str) -> str:
    """transformers T5 key → llama.cpp name (the inverse of the keymaps table)."""
    stem, leaf = key.rsplit(".", 1)
    top = {v: k for k, v in T5_GGUF_TOP.items()}
    if stem in top:
        return f"{top[stem]}.{leaf}"
    _, _, block, rest = stem.split(".", 3)
    return f"enc.blk.{block}.{ {v: k for k, v in T5_GGUF_BLOCK.items()}[rest] }.{leaf}"


def test_gguf_names_round_trip(reference):
    keys = _weights(reference)
    assert {t5_from_gguf_name(_gguf_name(k)) for k in keys} == set(keys)
    assert t5_from_gguf_name("dec.blk.0.attn_q.weight") is None and t5_from_gguf_name("output.weight") is None


def _write_gguf(path, weights, qtype: str, architecture: str = "t5encoder") -> dict[str, torch.Tensor]:
    """llama.cpp layout: 1-D tensors F32, 2-D F16 or Q8_0 (where rows are whole 32-blocks). Returns
    the values a reader gets back."""
    writer, back = gguf.GGUFWriter(path, architecture), {}
    for key, value in weights.items():
        array = value.numpy()
        if qtype == "Q8_0" and array.ndim == 2 and array.shape[1] % 32 == 0:
            raw = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(_gguf_name(key), raw, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            back[key] = torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0).copy())
        else:
            array = array.astype(np.float16) if qtype == "F16" and array.ndim == 2 else array
            writer.add_tensor(_gguf_name(key), array)
            back[key] = torch.from_numpy(array).float()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return back


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0"])
def test_gguf(tmp_path, reference, hf_tokenizer, tokenizer_dirs, qtype):
    back = _write_gguf(tmp_path / "t5.gguf", _weights(reference), qtype)
    _check(tmp_path / "t5.gguf", back, reference, hf_tokenizer, tokenizer_path=tokenizer_dirs["json"])
    encoder, detected = load_text_encoder(tmp_path / "t5.gguf", tokenizer_path=tokenizer_dirs["json"])
    if qtype == "Q8_0":
        assert type(encoder.model.encoder.block[0].layer[0].SelfAttention.q).__name__ == "QuantizedLinear"
        assert encoder.dtype == torch.bfloat16 and detected.stored_dtype.startswith("Q8_0")


# --- behaviour ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, reference, tokenizer_dirs):
    path = tmp_path_factory.mktemp("t5") / "t5.safetensors"
    save_file(_weights(reference), path)
    return load_text_encoder(path, tokenizer_path=tokenizer_dirs["spiece"])[0]


def test_mask_in_encoder(encoder, reference, hf_tokenizer):
    prompt = ["a red fox"]
    masked = [encoder.encode(prompt, max_length=n).context for n in (8, L)]
    unmasked = [encoder.encode(prompt, max_length=n, mask_in_encoder=False).context for n in (8, L)]
    tokens = int(encoder.tokenizer(prompt)[1].sum())
    # with the mask (official / ComfyUI) real tokens do not see the padding ...
    torch.testing.assert_close(masked[0][:, :tokens], masked[1][:, :tokens], atol=1e-6, rtol=0)
    # ... without it (diffusers) they do, so the padded length changes them
    assert (unmasked[0][:, :tokens] - unmasked[1][:, :tokens]).abs().max() > 1e-3
    diffusers = _reference_output(reference, _weights(reference), hf_tokenizer, prompt, mask_in_encoder=False)
    torch.testing.assert_close(unmasked[1], diffusers, atol=1e-5, rtol=0)


def test_batch_and_negative_prompts(encoder):
    cond = encoder.encode(PROMPTS[:2], negative_prompts="blurry", max_length=L)
    assert isinstance(cond, Conditioning) and cond.negative is not None
    assert cond.negative.context.shape == (2, L, 32) and cond.negative.mask.shape == (2, L)
    alone = encoder.encode(["blurry"], max_length=L)
    torch.testing.assert_close(cond.negative.context[1:], alone.context, atol=1e-6, rtol=0)
    first = encoder.encode(PROMPTS[0], max_length=L)  # a bare string is a batch of one
    torch.testing.assert_close(cond.context[:1], first.context, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="2 prompts but 3 negative prompts"):
        encoder.encode(PROMPTS[:2], negative_prompts=["a", "b", "c"])


def test_fp16_keeps_ff_output_in_float32(tmp_path, reference, tokenizer_dirs):
    save_file(_weights(reference), tmp_path / "t5.safetensors")
    encoder, _ = load_text_encoder(
        tmp_path / "t5.safetensors", dtype=torch.float16, tokenizer_path=tokenizer_dirs["json"]
    )
    ff = encoder.model.encoder.block[0].layer[1].DenseReluDense
    assert ff.wo.weight.dtype == torch.float32 and ff.wi_0.weight.dtype == torch.float16
    assert encoder.model.encoder.embed_tokens is encoder.model.shared
    assert torch.isfinite(encoder.encode(PROMPTS, max_length=L).context).all()


# --- errors ---------------------------------------------------------------------------------------


def test_no_tokenizer_next_to_model(tmp_path, reference):
    save_file(_weights(reference), tmp_path / "t5.safetensors")
    with pytest.raises(CheckpointError, match=r"no T5 tokenizer .*spiece\.model.*tokenizer_path") as error:
        load_text_encoder(tmp_path / "t5.safetensors")
    assert error.value.advice == "missing_tokenizer"


def test_tokenizer_beside_reads_no_weights(tmp_path, tokenizer_dirs):
    t5 = tmp_path / "models" / "t5xxl_fp16.safetensors"
    t5.parent.mkdir()
    t5.write_bytes(b"not even a safetensors file")  # never opened
    assert tokenizer_beside(t5) is None
    shutil.copytree(tokenizer_dirs["json"], t5.parent / "tokenizer")
    assert tokenizer_beside(t5) == t5.parent / "tokenizer" / "tokenizer.json"
    diffusers = tmp_path / "LTX-Video"
    (diffusers / "text_encoder").mkdir(parents=True)
    (diffusers / "text_encoder" / "config.json").write_text("{}")
    assert tokenizer_beside(diffusers) is None
    shutil.copytree(tokenizer_dirs["spiece"], diffusers / "tokenizer")
    assert tokenizer_beside(diffusers) == tokenizer_beside(diffusers / "text_encoder")
    assert tokenizer_beside(diffusers) == diffusers / "tokenizer" / "spiece.model"


def test_a_tokenizer_too_big_for_the_model_is_refused_before_loading(tmp_path, reference, monkeypatch):
    small = {**_weights(reference), "shared.weight": _weights(reference)["shared.weight"][:10]}  # 10 tokens
    save_file(small, tmp_path / "t5.safetensors")
    (tmp_path / "spiece.model").write_bytes(train_tiny_spiece())
    monkeypatch.setattr("ltx_core.loading.text_encoder.load_tensors", lambda *a, **k: pytest.fail("weights read"))
    with pytest.raises(CheckpointError, match=r"spiece\.model: has \d+ tokens, more than the \d+ rows") as error:
        load_text_encoder(tmp_path / "t5.safetensors")
    assert error.value.advice == "bad_tokenizer"


def test_other_components_are_named(tmp_path, reference):
    save_file({"decoder.conv_in.conv.weight": torch.zeros(1)}, tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match=r"contains an LTX-Video VAE; expected a T5 text encoder\. Load it with"):
        load_text_encoder(tmp_path / "vae.safetensors")
    writer = gguf.GGUFWriter(tmp_path / "ltxv.gguf", "ltxv")
    writer.add_tensor("adaln_single.emb.timestep_embedder.linear_1.weight", np.zeros((2, 2), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(CheckpointError, match=r"contains an LTX-Video transformer.*load_transformer\(\)"):
        load_text_encoder(tmp_path / "ltxv.gguf")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "LTXVideoTransformer3DModel"}))
    with pytest.raises(CheckpointError, match="LTXVideoTransformer3DModel.*model_type 't5'.*load_transformer"):
        load_text_encoder(tmp_path / "unet")
    _write_gguf(tmp_path / "flux.gguf", {"shared.weight": torch.zeros(2, 2)}, "F32", architecture="flux")
    with pytest.raises(CheckpointError, match="general.architecture is 'flux'; expected a T5 encoder GGUF"):
        load_text_encoder(tmp_path / "flux.gguf")


@pytest.mark.parametrize("suffix", ["safetensors", "gguf"])
def test_truncated_file(tmp_path, reference, suffix):
    path = tmp_path / f"t5.{suffix}"
    if suffix == "gguf":
        _write_gguf(path, _weights(reference), "Q8_0")
    else:
        save_file(_weights(reference), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_text_encoder(path)


@pytest.mark.parametrize("scaled", [False, True])
def test_fp8_file_computes_from_fp8_weights(tmp_path, reference, tokenizer_dirs, scaled):
    """An fp8 T5 file keeps its linear layers in fp8 (expanded per layer at use: half the memory of
    bf16), computes exactly what weights expanded at load compute, and stays close to the bf16 model
    it was made from: the error is fp8's, measured here."""
    weights = _weights(reference)
    stored, dequantized = _fp8(weights, scaled)
    for name, tensors in (("fp8", stored), ("expanded", dequantized), ("bf16", weights)):
        save_file(tensors, tmp_path / f"t5_{name}.safetensors")
    kw = {"tokenizer_path": tokenizer_dirs["spiece"]}
    fp8, _ = load_text_encoder(tmp_path / "t5_fp8.safetensors", **kw)  # default dtype: bf16
    expanded, _ = load_text_encoder(tmp_path / "t5_expanded.safetensors", dtype=torch.bfloat16, **kw)
    bf16, _ = load_text_encoder(tmp_path / "t5_bf16.safetensors", dtype=torch.bfloat16, **kw)
    linears = [m for m in fp8.modules() if isinstance(m, torch.nn.Linear | Fp8WeightLinear)]
    assert linears and all(isinstance(m, Fp8WeightLinear) for m in linears)
    assert fp8.dtype == torch.bfloat16
    fp8_linear_bytes = sum(m.weight_fp8.numel() for m in linears)
    assert module_bytes(expanded) - module_bytes(fp8) >= fp8_linear_bytes - 64  # half of every bf16 linear
    outputs = {m: e.encode(PROMPTS, max_length=L).context.float() for m, e in (("fp8", fp8), ("ex", expanded))}
    assert torch.equal(outputs["fp8"], outputs["ex"])  # the same float32 product, rounded once
    error = (outputs["fp8"] - bf16.encode(PROMPTS, max_length=L).context.float()).norm() / outputs["ex"].norm()
    assert error < FP8_T5_ERROR, f"relative error of fp8 against bf16: {error:.4f}"


# Relative L2 error of the hidden states against the same weights in bf16, measured on the tiny random
# T5 above: 0.051 for plain fp8 files, 0.054 for scaled ones (bf16 against float32: 0.008). e4m3
# keeps 3 mantissa bits: ~3.6 % rms per weight, accumulated over the layers.
FP8_T5_ERROR = 0.08


def test_fp8_file_in_fp16_keeps_the_ff_output_in_float32(tmp_path, reference, tokenizer_dirs):
    stored, _ = _fp8(_weights(reference), scaled=True)
    save_file(stored, tmp_path / "t5_fp8.safetensors")
    encoder, _ = load_text_encoder(
        tmp_path / "t5_fp8.safetensors", dtype=torch.float16, tokenizer_path=tokenizer_dirs["spiece"]
    )
    ff = encoder.model.encoder.block[0].layer[1].DenseReluDense
    assert isinstance(ff.wi_0, Fp8WeightLinear) and ff.wo.weight.dtype == torch.float32
    assert torch.isfinite(encoder.encode(PROMPTS, max_length=L).context).all()
