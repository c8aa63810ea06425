#!/usr/bin/env python3
"""Tiny random-init checkpoints made by Hugging Face transformers itself, and transformers' own figures
on them, for test/tools/transformers_conformance_test.cpp (which needs no PyTorch).

For every case of CASES it makes, in OUT/<case>/:
  config.json, model.safetensors, generation_config.json  as save_pretrained writes them (BF16); a case
      of form "v4" has its config.json rewritten into transformers 4's form (top-level rope_theta and
      rope_scaling, no rope_parameters), which transformers 5 still reads;
  eval.jsonl, calib.jsonl   fixed token ids ({"input_ids": [...]} records): the evaluation sequences and
      a calibration set for the W4A4 quantization the test also runs;
  logits.bin   transformers' float32 logits on the evaluation sequences, [sequences, length, vocab]
      float32 little-endian;
  expected.json   the case, the versions used, the total NLL (sum of next-token -log p, log-softmax and
      sums in float64) per sequence and overall, and the SENSITIVITY: the same NLL with the case's
      distinguishing feature removed (each ablation below), with its relative difference, so that the
      test can show that its tolerance is far below what leaving the feature out costs.

The reference forward is the checkpoint loaded back from the saved BF16 files by
AutoModelForCausalLM.from_pretrained, cast to float32, eager attention, one sequence at a time.

A new architecture or config form is one entry of CASES. Everything is deterministic (fixed seeds, one
thread): running it twice gives the same files; `--compare A B` checks two generated trees against each
other (every file byte for byte but the figures, which may differ in their last bits on another CPU).

    make_transformers_checkpoints.py --out testdata/conformance
    make_transformers_checkpoints.py --out /tmp/x && make_transformers_checkpoints.py --compare /tmp/x testdata/conformance
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Callable, Optional

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

SEQ_LEN = 48
EVAL_SEQUENCES = 2
CALIB_SEQUENCES = 8
VOCAB = 256
NLL_RTOL = 1e-5       # what the C++ test holds fp4c's total NLL to
LOGITS_ATOL = 1e-4    # and its logits

# The shape every case starts from: a few hundred KB in BF16.
BASE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=VOCAB,
    max_position_embeddings=128,
    initializer_range=0.15,   # large enough that the logits are far from flat
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


# ---- ablations: the model with one feature removed -------------------------------------------------

@dataclasses.dataclass
class Ablation:
    name: str                                   # what is removed, as the test prints it
    config: Optional[Callable[[dict], None]] = None     # edits the config.json dict (as saved) in place
    model: Optional[Callable[[torch.nn.Module], None]] = None   # edits the loaded float32 model in place
    patch: Optional[Callable[[], contextlib.AbstractContextManager]] = None   # around the forward
    note: str = ""                              # why a small delta is expected, where it is


def set_rope(c: dict, **kw):
    """Sets RoPE parameters of a saved config in whichever form it has."""
    if "rope_parameters" in c:
        c["rope_parameters"].update(kw)
        return
    for k, v in kw.items():
        if k == "rope_theta":
            c["rope_theta"] = v
        else:
            c.setdefault("rope_scaling", {})[k] = v


def default_rope(c: dict):
    """RoPE scaling removed: rope_type default, rope_theta kept."""
    if "rope_parameters" in c:
        c["rope_parameters"] = {"rope_theta": c["rope_parameters"]["rope_theta"], "rope_type": "default"}
    else:
        c.pop("rope_scaling", None)


def norms_to_one(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)


def zero_biases(suffixes):
    def edit(model):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias") and any(name.endswith(s + ".bias") for s in suffixes):
                    p.zero_()
    return edit


def head_norms_to_one(model):
    """Qwen3's q_norm / k_norm weights set to 1 (the per-head normalization itself stays)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("q_norm.weight") or name.endswith("k_norm.weight"):
                p.fill_(1.0)


def gemma_embed_scale_one(model):
    model.model.embed_tokens.embed_scale = torch.tensor(1.0)


def gemma_norms_without_one(model):
    """Gemma's norms multiply by (1 + w); with w - 1 stored, they multiply by w: what reading w as Llama does."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.sub_(1.0)


def attention_scale(head_dim_used):
    def edit(model):
        for layer in model.model.layers:
            layer.self_attn.scaling = head_dim_used ** -0.5
    return edit


def lm_head_is_embedding(model):
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())


def lm_head_fresh(model):
    """What a loader that ignores tying would compute: an lm_head of its own, freshly initialized."""
    g = torch.Generator().manual_seed(99)
    w = torch.randn(model.lm_head.weight.shape, generator=g) * BASE["initializer_range"]
    model.lm_head.weight = torch.nn.Parameter(w)


@contextlib.contextmanager
def kv_heads_tiled(module_name):
    """GQA with the key/value heads repeated as a tile (head h uses kv head h % kv) instead of
    transformers' repeat_interleave (head h uses kv head h // (heads / kv))."""
    import importlib
    mod = importlib.import_module(module_name)
    original = mod.repeat_kv

    def tiled(hidden_states, n_rep):
        return hidden_states if n_rep == 1 else hidden_states.repeat(1, n_rep, 1, 1)
    mod.repeat_kv = tiled
    try:
        yield
    finally:
        mod.repeat_kv = original


def phi3_qkv_order(order):
    """Phi-3's fused qkv_proj with its q, k, v row blocks in another order (what a reader slicing the rows
    in `order` instead of q|k|v would compute). The blocks keep their sizes, so only same-size blocks swap."""
    def edit(model):
        c = model.config
        hd = c.hidden_size // c.num_attention_heads
        sizes = {"q": c.num_attention_heads * hd, "k": c.num_key_value_heads * hd, "v": c.num_key_value_heads * hd}
        with torch.no_grad():
            for layer in model.model.layers:
                w = layer.self_attn.qkv_proj.weight
                start, blocks = 0, {}
                for name in "qkv":
                    blocks[name] = w[start:start + sizes[name]].clone()
                    start += sizes[name]
                start = 0
                for slot, name in zip("qkv", order):
                    assert sizes[slot] == sizes[name]
                    w[start:start + sizes[slot]] = blocks[name]
                    start += sizes[slot]
    return edit


def phi3_up_gate(model):
    """gate_up_proj read as up|gate instead of gate|up."""
    with torch.no_grad():
        for layer in model.model.layers:
            w = layer.mlp.gate_up_proj.weight
            half = w.shape[0] // 2
            w.copy_(torch.cat([w[half:].clone(), w[:half].clone()]))


def whole_head_rotary(c: dict):
    """partial_rotary_factor 1 (the whole head rotated), the longrope factors extended with 1s to head_dim / 2."""
    p = c["rope_parameters"]
    p["partial_rotary_factor"] = 1.0
    c.pop("partial_rotary_factor", None)
    half = (c["hidden_size"] // c["num_attention_heads"]) // 2
    for k in ("short_factor", "long_factor"):
        if k in p:
            p[k] = p[k] + [1.0] * (half - len(p[k]))


# Phi-3's config class has pad_token_id 32000 (its real vocabulary): beyond these cases' 256 ids.
PHI3 = dict(pad_token_id=None, bos_token_id=1, eos_token_id=2)
@contextlib.contextmanager
def mixtral_router_without_renormalization():
    """Mixtral's router with its top-k probabilities left as softmax gave them (not renormalized to sum 1)."""
    from transformers.models.mixtral import modeling_mixtral as mod
    original = mod.MixtralTopKRouter.forward

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = torch.nn.functional.linear(hidden_states, self.weight)
        router_probs = torch.nn.functional.softmax(router_logits.float(), dim=-1)
        top_value, top_index = torch.topk(router_probs, self.top_k, dim=-1)
        return router_logits, top_value, top_index
    mod.MixtralTopKRouter.forward = forward
    try:
        yield
    finally:
        mod.MixtralTopKRouter.forward = original


def flip_norm_topk_prob(c: dict):
    c["norm_topk_prob"] = not c["norm_topk_prob"]


def top_1(c: dict):
    c["num_experts_per_tok"] = 1


# ---- the cases ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    name: str
    model_type: str                 # transformers' model_type (AutoConfig.for_model)
    description: str
    config: dict = dataclasses.field(default_factory=dict)   # overrides of BASE for the config class
    form: str = "v5"                # "v5": config.json as transformers 5 writes it; "v4": rope_theta/rope_scaling;
                                    # "v4-type": the same with rope_scaling's type under its older key "type"
    ablations: list = dataclasses.field(default_factory=list)
    seed: int = 0


CASES = [
    Case("llama_rope_theta_v4", "llama",
         "Llama, transformers 4's form: top-level rope_theta (1000, not the default 10000), no rope_parameters",
         config=dict(rope_parameters={"rope_type": "default", "rope_theta": 1000.0}), form="v4",
         ablations=[Ablation("rope_theta (default 10000 used)", config=lambda c: c.pop("rope_theta")),
                    Ablation("norm weights (all 1)", model=norms_to_one)], seed=1),
    Case("llama_rope_parameters_v5", "llama",
         "Llama, transformers 5's form: rope_parameters {rope_theta 1000, rope_type default}, no top-level rope_theta",
         config=dict(rope_parameters={"rope_type": "default", "rope_theta": 1000.0}),
         ablations=[Ablation("rope_parameters.rope_theta (default 10000 used)",
                             config=lambda c: set_rope(c, rope_theta=10000.0)),
                    Ablation("norm weights (all 1)", model=norms_to_one)], seed=2),
    Case("llama_rope_linear", "llama", "Llama, RoPE type linear (factor 4) in rope_parameters",
         config=dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
         ablations=[Ablation("rope type linear (default RoPE used)", config=default_rope)], seed=3),
    Case("llama_rope_linear_v4", "llama", "Llama, RoPE type linear (factor 4) in transformers 4's rope_scaling",
         config=dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}), form="v4",
         ablations=[Ablation("rope_scaling linear (default RoPE used)", config=default_rope)], seed=4),
    Case("llama_rope_linear_v4_type", "llama",
         "Llama, RoPE type linear (factor 4) in rope_scaling with the older key 'type' (transformers before 4.45)",
         config=dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}), form="v4-type",
         ablations=[Ablation("rope_scaling linear (default RoPE used)", config=default_rope)], seed=15),
    Case("llama_rope_dynamic", "llama",
         "Llama, RoPE type dynamic (NTK, factor 4), sequences within max_position_embeddings",
         config=dict(rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}),
         ablations=[Ablation("rope type dynamic (default RoPE used)", config=default_rope,
                             note="dynamic NTK equals the default RoPE for sequences within "
                                  "max_position_embeddings, so this delta is 0 by definition"),
                    Ablation("rope type dynamic read as linear", config=lambda c: set_rope(c, rope_type="linear"))],
         seed=5),
    Case("llama_rope_llama3_v4", "llama",
         "Llama 3.x: rope_scaling llama3 (factor 8, low 1, high 4, original_max_position_embeddings 16) in "
         "transformers 4's form, as Llama 3.1 configs ship",
         config=dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                      "rope_theta": 500000.0}), form="v4",
         ablations=[Ablation("rope_scaling llama3 (default RoPE used)", config=default_rope)], seed=6),
    Case("llama_rope_llama3", "llama", "Llama 3.x: RoPE type llama3 in rope_parameters",
         config=dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                      "rope_theta": 500000.0}),
         ablations=[Ablation("rope type llama3 (default RoPE used)", config=default_rope)], seed=7),
    Case("llama_rope_yarn", "llama",
         "Llama, RoPE type yarn (factor 4, original_max_position_embeddings 32: frequencies and attention factor)",
         config=dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                                      "rope_theta": 10000.0}),
         ablations=[Ablation("rope type yarn (default RoPE used)", config=default_rope)], seed=16),
    Case("llama_rope_longrope", "llama",
         "Llama, RoPE type longrope (Phi-3 long context: short/long factors, original_max_position_embeddings 32 "
         "below the sequence length, so the long factors apply)",
         config=dict(rope_parameters={"rope_type": "longrope", "original_max_position_embeddings": 32,
                                      "short_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5],
                                      "long_factor": [1.0, 1.2, 1.5, 2.0, 3.0, 4.5, 6.0, 8.0],
                                      "rope_theta": 10000.0}),
         ablations=[Ablation("rope type longrope (default RoPE used)", config=default_rope)], seed=17),
    Case("llama_rope_longrope_short", "llama",
         "Llama, RoPE type longrope with original_max_position_embeddings 64 above the sequence length (48), so "
         "the short factors apply",
         config=dict(rope_parameters={"rope_type": "longrope", "original_max_position_embeddings": 64,
                                      "short_factor": [1.0, 1.3, 1.8, 2.5, 3.5, 5.0, 7.0, 9.0],
                                      "long_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5],
                                      "rope_theta": 10000.0}),
         ablations=[Ablation("the short factors (the long ones used)",
                             config=lambda c: c["rope_parameters"].__setitem__(
                                 "short_factor", c["rope_parameters"]["long_factor"]))], seed=28),
    Case("llama_head_dim", "llama", "Llama with an explicit head_dim 24 (hidden 64 / 4 heads would be 16)",
         config=dict(head_dim=24),
         ablations=[Ablation("head_dim in the attention scale (1/sqrt(16) used)", model=attention_scale(16))],
         seed=8),
    Case("llama_attention_bias", "llama", "Llama with attention_bias true (q, k, v and o biases)",
         config=dict(attention_bias=True),
         ablations=[Ablation("attention biases (all 0)", model=zero_biases(["q_proj", "k_proj", "v_proj", "o_proj"]))],
         seed=9),
    Case("llama_tied", "llama", "Llama with tie_word_embeddings true (no lm_head.weight in the file)",
         config=dict(tie_word_embeddings=True),
         ablations=[Ablation("tying (an lm_head of its own, freshly initialized)", model=lm_head_fresh)], seed=10),
    Case("llama_untied", "llama", "Llama with tie_word_embeddings false (lm_head.weight of its own)",
         config=dict(tie_word_embeddings=False),
         ablations=[Ablation("lm_head (the embedding used instead)", model=lm_head_is_embedding)], seed=11),
    Case("llama_gqa", "llama", "Llama with grouped-query attention: 4 query heads, 2 key/value heads",
         config=dict(num_key_value_heads=2),
         ablations=[Ablation("GQA head mapping (kv heads tiled, not interleaved)",
                             patch=lambda: kv_heads_tiled("transformers.models.llama.modeling_llama"))], seed=12),
    Case("qwen2", "qwen2", "Qwen2: q/k/v biases, GQA (2 kv heads), no sliding window",
         config=dict(num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         ablations=[Ablation("q/k/v biases (all 0)", model=zero_biases(["q_proj", "k_proj", "v_proj"])),
                    Ablation("GQA head mapping (kv heads tiled, not interleaved)",
                             patch=lambda: kv_heads_tiled("transformers.models.qwen2.modeling_qwen2"))], seed=13),
    Case("qwen2_tied", "qwen2", "Qwen2 with tie_word_embeddings true, as the small Qwen2.5 models ship",
         config=dict(num_key_value_heads=2, tie_word_embeddings=True),
         ablations=[Ablation("tying (an lm_head of its own, freshly initialized)", model=lm_head_fresh)], seed=18),
    Case("mistral", "mistral",
         "Mistral: sliding_window 64, at least the sequence length (48), so attention is full causal",
         config=dict(sliding_window=64, num_key_value_heads=2),
         ablations=[Ablation("the window, were it 16 (shorter than the sequences: "
                             "another model)", config=lambda c: c.__setitem__("sliding_window", 16)),
                    Ablation("norm weights (all 1)", model=norms_to_one)], seed=14),
    Case("mistral_head_dim", "mistral",
         "Mistral with an explicit head_dim 32 (hidden 64 / 4 heads would be 16), as Mistral NeMo has",
         config=dict(sliding_window=64, num_key_value_heads=2, head_dim=32),
         ablations=[Ablation("head_dim in the attention scale (1/sqrt(16) used)", model=attention_scale(16))],
         seed=19),
    Case("mistral_window", "mistral",
         "Mistral: sliding_window 16, shorter than the sequences (48): every layer sees its last 16 positions",
         config=dict(sliding_window=16, num_key_value_heads=2),
         ablations=[Ablation("the window (64: full causal attention)",
                             config=lambda c: c.__setitem__("sliding_window", 64))], seed=20),
    Case("qwen2_sliding_layers", "qwen2",
         "Qwen2 with use_sliding_window true, sliding_window 4, max_window_layers 1: layer 1 slides, layer 0 not",
         config=dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1),
         ablations=[Ablation("use_sliding_window (false: full attention everywhere)",
                             config=lambda c: (c.__setitem__("use_sliding_window", False),
                                               c.__setitem__("layer_types", ["full_attention"] * 2)))],
         seed=21),
    Case("llama_mlp_bias", "llama", "Llama with mlp_bias true (gate, up and down biases)",
         config=dict(mlp_bias=True),
         ablations=[Ablation("MLP biases (all 0)", model=zero_biases(["gate_proj", "up_proj", "down_proj"]))],
         seed=22),
    Case("qwen3", "qwen3", "Qwen3: per-head RMSNorm of q and k before RoPE, head_dim 32 (not 64 / 4), GQA",
         config=dict(num_key_value_heads=2, head_dim=32,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         ablations=[Ablation("q_norm / k_norm weights (all 1)", model=head_norms_to_one)], seed=23),
    Case("qwen3_yarn", "qwen3",
         "Qwen3 with YaRN as its long-context configs ship it (factor 4, original_max_position_embeddings 32)",
         config=dict(num_key_value_heads=2, head_dim=16,
                     rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                                      "rope_theta": 10000.0}),
         ablations=[Ablation("rope type yarn (default RoPE used)", config=default_rope)], seed=24),
    Case("qwen3_attention_bias", "qwen3", "Qwen3 with attention_bias true (q, k, v and o biases)",
         config=dict(num_key_value_heads=2, head_dim=16, attention_bias=True),
         ablations=[Ablation("attention biases (all 0)", model=zero_biases(["q_proj", "k_proj", "v_proj", "o_proj"]))],
         seed=25),
    Case("gemma3", "gemma3_text",
         "Gemma 3 (text): (1 + w) norms, four norms per layer, q/k norms, GeGLU (gelu tanh), embeddings times "
         "sqrt(hidden), query_pre_attn_scalar 20 (not head_dim 24), a sliding layer (window 8, RoPE base 100) and "
         "a full one (RoPE base 1000) as transformers 5 writes them (layer_types, rope_parameters per layer type)",
         config=dict(num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=20, sliding_window=8,
                     layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
                     rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}),
         ablations=[Ablation("query_pre_attn_scalar (head_dim used)",
                             config=lambda c: c.__setitem__("query_pre_attn_scalar", 24)),
                    Ablation("the window (64: full attention)", config=lambda c: c.__setitem__("sliding_window", 64)),
                    Ablation("the sliding layers' RoPE base (the full layers' 1000 used)",
                             config=lambda c: c["rope_parameters"]["sliding_attention"].__setitem__("rope_theta", 1000.0)),
                    Ablation("GeGLU's gelu tanh (SiLU used)",
                             config=lambda c: c.__setitem__("hidden_activation", "silu")),
                    Ablation("the embedding scale (1 used)", model=gemma_embed_scale_one),
                    Ablation("(1 + w) norms (x * w used)", model=gemma_norms_without_one)], seed=26),
    Case("gemma3_v4", "gemma3_text",
         "Gemma 3 as transformers 4 writes it: rope_theta and rope_scaling (linear, factor 2) for the full layers, "
         "rope_local_base_freq for the sliding ones, sliding_window_pattern 2 instead of layer_types",
         config=dict(num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=32, sliding_window=6,
                     layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
                     rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}),
         form="gemma-v4",
         ablations=[Ablation("rope_scaling linear on the full layers (default RoPE used)",
                             config=lambda c: c.pop("rope_scaling")),
                    Ablation("rope_local_base_freq (the default 10000 used)",
                             config=lambda c: c.pop("rope_local_base_freq"))], seed=27),
    Case("phi3", "phi3",
         "Phi-3: q|k|v fused into qkv_proj and gate|up into gate_up_proj (split into row slices by fp4c, re-fused "
         "in the artifact), GQA (4 heads, 2 kv heads)",
         config=dict(num_key_value_heads=2, **PHI3),
         ablations=[Ablation("the fusion order q|k|v (read as q|v|k)", model=phi3_qkv_order("qvk")),
                    Ablation("the fusion order gate|up (read as up|gate)", model=phi3_up_gate),
                    Ablation("norm weights (all 1)", model=norms_to_one)], seed=29),
    Case("phi3_mha_order", "phi3",
         "Phi-3 without GQA (q, k, v blocks of one size), so that reading the rows as k|q|v is a model too",
         config=dict(**PHI3),
         ablations=[Ablation("the fusion order q|k|v (read as k|q|v)", model=phi3_qkv_order("kqv"))], seed=30),
    Case("phi3_longrope", "phi3",
         "Phi-3 128k form: rope_scaling longrope with short and long factors, the top-level "
         "original_max_position_embeddings 32 below the sequence length (48), so the long factors apply",
         config=dict(num_key_value_heads=2, original_max_position_embeddings=32, **PHI3,
                     rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                      "short_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5],
                                      "long_factor": [1.0, 1.2, 1.5, 2.0, 3.0, 4.5, 6.0, 8.0]}),
         ablations=[Ablation("the long factors (the short ones used)",
                             config=lambda c: c["rope_parameters"].__setitem__(
                                 "long_factor", c["rope_parameters"]["short_factor"]))], seed=31),
    Case("phi3_longrope_short", "phi3",
         "Phi-3 longrope with original_max_position_embeddings 64 above the sequence length (48): the short factors",
         config=dict(num_key_value_heads=2, original_max_position_embeddings=64, **PHI3,
                     rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                      "short_factor": [1.0, 1.3, 1.8, 2.5, 3.5, 5.0, 7.0, 9.0],
                                      "long_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4, 1.5]}),
         ablations=[Ablation("the short factors (the long ones used)",
                             config=lambda c: c["rope_parameters"].__setitem__(
                                 "short_factor", c["rope_parameters"]["long_factor"]))], seed=32),
    Case("phi4_mini_partial_rotary", "phi3",
         "Phi-4-mini's form (Phi3ForCausalLM): partial_rotary_factor 0.75 (RoPE on 12 of 16 head dimensions), "
         "longrope with 6 factors (long ones apply), tied embeddings, GQA",
         config=dict(num_key_value_heads=2, original_max_position_embeddings=32, tie_word_embeddings=True, **PHI3,
                     rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                      "short_factor": [1.0, 1.0, 1.05, 1.1, 1.2, 1.3],
                                      "long_factor": [1.0, 1.2, 1.5, 2.0, 3.0, 4.5]}),
         ablations=[Ablation("partial rotary (the whole head rotated)", config=whole_head_rotary)], seed=33),
    Case("phi3_partial_rotary", "phi3",
         "Phi-3 with partial_rotary_factor 0.5 and default RoPE (RoPE on 8 of 16 head dimensions)",
         config=dict(num_key_value_heads=2, **PHI3,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
         ablations=[Ablation("partial rotary (the whole head rotated)", config=whole_head_rotary)], seed=34),
    Case("phi3_window", "phi3",
         "Phi-3 with sliding_window 16, shorter than the sequences (48): every layer sees its last 16 positions",
         config=dict(num_key_value_heads=2, sliding_window=16, **PHI3),
         ablations=[Ablation("the window (none: full causal attention)",
                             config=lambda c: c.__setitem__("sliding_window", None))], seed=35),
    Case("gemma3_softcap", "gemma3_text",
         "Gemma 3 (text) with final_logit_softcapping 1.5: logits = tanh(x / 1.5) * 1.5",
         config=dict(num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                     layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
                     final_logit_softcapping=1.5,
                     rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}),
         ablations=[Ablation("final_logit_softcapping (none)",
                             config=lambda c: c.__setitem__("final_logit_softcapping", None))], seed=36),
    Case("mixtral", "mixtral",
         "Mixtral: 4 experts (w1/w3/w2 of intermediate_size 64), top 2 renormalized, GQA, rope_theta 1e6",
         config=dict(num_key_value_heads=2, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
         ablations=[Ablation("the router's renormalization of the top-2 probabilities",
                             patch=mixtral_router_without_renormalization),
                    Ablation("top-2 routing (top-1 used)", config=top_1)], seed=29),
    Case("qwen3_moe", "qwen3_moe",
         "Qwen3-MoE: 4 experts of moe_intermediate_size 32, top 2 with norm_topk_prob true, q/k norms, head_dim 16",
         config=dict(num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                     moe_intermediate_size=32, norm_topk_prob=True),
         ablations=[Ablation("norm_topk_prob (false: the top-k probabilities as softmax gave them)",
                             config=flip_norm_topk_prob),
                    Ablation("top-2 routing (top-1 used)", config=top_1),
                    Ablation("q_norm / k_norm weights (all 1)", model=head_norms_to_one)], seed=30),
    Case("qwen3_moe_raw", "qwen3_moe",
         "Qwen3-MoE with norm_topk_prob false (its config class's default): top-2 weights not renormalized, "
         "6 experts",
         config=dict(num_key_value_heads=2, head_dim=16, num_experts=6, num_experts_per_tok=2,
                     moe_intermediate_size=32, norm_topk_prob=False),
         ablations=[Ablation("norm_topk_prob (true: renormalized)", config=flip_norm_topk_prob)], seed=31),
    Case("qwen3_moe_dense_layers", "qwen3_moe",
         "Qwen3-MoE with decoder_sparse_step 2 over 3 layers and mlp_only_layers [2]: layer 1 sparse "
         "(top 2 of 4, renormalized), layers 0 and 2 dense MLPs of intermediate_size 128",
         config=dict(num_hidden_layers=3, num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
                     moe_intermediate_size=32, norm_topk_prob=True, decoder_sparse_step=2, mlp_only_layers=[2]),
         ablations=[Ablation("norm_topk_prob (false)", config=flip_norm_topk_prob),
                    Ablation("top-2 routing (top-1 used)", config=top_1)], seed=32),
]


# ---- making one case -----------------------------------------------------------------------------

def token_ids(seed, n):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, size=(n, SEQ_LEN)).tolist()


EVAL_IDS = token_ids(20260101, EVAL_SEQUENCES)
CALIB_IDS = token_ids(20260202, CALIB_SEQUENCES)


def sensitize(model, seed):
    """Norm weights far from 1 (uniform in [0.5, 2], a quarter of them negative) and biases of a size
    that matters (transformers initializes norms to 1 and biases to 0, which would hide both)."""
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                mag = 0.5 + 1.5 * torch.rand(p.shape, generator=g)
                sign = torch.where(torch.rand(p.shape, generator=g) < 0.25, -1.0, 1.0)
                p.copy_(mag * sign)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def to_v4_form(c: dict, type_key: str = "rope_type") -> dict:
    """transformers 4's config.json: rope_theta at the top, the scaling (if any) in rope_scaling (its type
    under `type_key`: "rope_type", or "type" as transformers before 4.45 wrote it)."""
    c = dict(c)
    p = dict(c.pop("rope_parameters"))
    c["rope_theta"] = p.pop("rope_theta")
    if p.get("rope_type", "default") != "default":
        p[type_key] = p.pop("rope_type")
        c["rope_scaling"] = p
    return c


def to_gemma_v4_form(c: dict) -> dict:
    """Gemma 3's config.json as transformers 4 wrote it: rope_theta (+ rope_scaling) of the full layers,
    rope_local_base_freq of the sliding ones, sliding_window_pattern instead of layer_types."""
    c = dict(c)
    p = c.pop("rope_parameters")
    full, local = dict(p["full_attention"]), dict(p["sliding_attention"])
    c["rope_theta"] = full.pop("rope_theta")
    c["rope_local_base_freq"] = local.pop("rope_theta")
    if full.get("rope_type", "default") != "default":
        c["rope_scaling"] = full
    types = c.pop("layer_types")
    pattern = types.index("full_attention") + 1
    assert all((t == "full_attention") == ((i + 1) % pattern == 0) for i, t in enumerate(types))
    c["sliding_window_pattern"] = pattern
    return c


def write_json(path, obj):
    # As transformers writes config.json.
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_float32(directory, config_edit=None):
    """The checkpoint in `directory` loaded by transformers, float32, eager attention; with
    `config_edit`, from a copy whose config.json has been edited."""
    if config_edit is None:
        return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    with tempfile.TemporaryDirectory() as tmp:
        for f in os.listdir(directory):
            if f.endswith(".safetensors"):
                shutil.copy(os.path.join(directory, f), tmp)
        with open(os.path.join(directory, "config.json")) as f:
            c = json.load(f)
        config_edit(c)
        write_json(os.path.join(tmp, "config.json"), c)
        return AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")


def forward(model, ids, patch=None):
    """Logits [S, T, V] float32 and the total NLL of each sequence (float64)."""
    logits, nll = [], []
    with torch.no_grad(), (patch() if patch else contextlib.nullcontext()):
        for seq in ids:
            t = torch.tensor([seq], dtype=torch.long)
            lg = model(input_ids=t).logits[0].float()
            lp = torch.log_softmax(lg.double(), dim=-1)
            nll.append(float(-lp[:-1].gather(1, t[0, 1:, None]).sum()))
            logits.append(lg.numpy())
    return np.stack(logits), nll


def make_case(case: Case, out_dir: str):
    d = os.path.join(out_dir, case.name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    cfg = AutoConfig.for_model(case.model_type, **{**BASE, **case.config})
    torch.manual_seed(case.seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    sensitize(model, case.seed)
    model.to(torch.bfloat16).save_pretrained(d)
    written = json.load(open(os.path.join(d, "config.json")))
    if case.form in ("v4", "v4-type"):
        write_json(os.path.join(d, "config.json"),
                   to_v4_form(written, "type" if case.form == "v4-type" else "rope_type"))
    elif case.form == "gemma-v4":
        write_json(os.path.join(d, "config.json"), to_gemma_v4_form(written))
    elif case.form != "v5":
        raise ValueError(f"{case.name}: unknown form {case.form}")
    with open(os.path.join(d, "eval.jsonl"), "w") as f:
        for s in EVAL_IDS:
            f.write(json.dumps({"input_ids": s}) + "\n")
    with open(os.path.join(d, "calib.jsonl"), "w") as f:
        for s in CALIB_IDS:
            f.write(json.dumps({"input_ids": s}) + "\n")

    ref = load_float32(d)
    # The v4 form must be read by transformers as the same model as the v5 one it was made from.
    if case.form != "v5":
        got = {k: v for k, v in ref.config.rope_parameters.items() if k != "type"}
        want = dict(cfg.rope_parameters)
        if got != want:
            raise RuntimeError(f"{case.name}: transformers reads the v4 form as {got}, made as {want}")
    logits, nll = forward(ref, EVAL_IDS)
    total = math.fsum(nll)
    if not all(math.isfinite(x) for x in nll):
        raise RuntimeError(f"{case.name}: NLL not finite")
    logits.astype("<f4").tofile(os.path.join(d, "logits.bin"))

    sensitivity = []
    for a in case.ablations:
        m = load_float32(d, a.config)
        if a.model:
            a.model(m)
        logits_a, nll_a = forward(m, EVAL_IDS, a.patch)
        total_a = math.fsum(nll_a)
        entry = {"removed": a.name, "nll_total": total_a, "relative_delta": abs(total_a - total) / abs(total),
                 "max_logit_delta": float(np.max(np.abs(logits_a - logits)))}
        if a.note:
            entry["note"] = a.note
        sensitivity.append(entry)

    predictions = sum(len(s) - 1 for s in EVAL_IDS)
    expected = {
        "case": case.name,
        "description": case.description,
        "architecture": written["architectures"][0],
        "config_form": case.form,
        "made_by": {"script": "scripts/conformance/make_transformers_checkpoints.py",
                    "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
                    "seed": case.seed},
        "reference": "transformers AutoModelForCausalLM.from_pretrained(BF16 files), float32, eager attention, "
                     "one sequence at a time; NLL = sum of -log_softmax(logits in float64)[next id]",
        "eval_file": "eval.jsonl",
        "calib_file": "calib.jsonl",
        "sequences": len(EVAL_IDS),
        "sequence_length": SEQ_LEN,
        "predictions": predictions,
        "nll": {"per_sequence": nll, "total": total, "perplexity": math.exp(total / predictions)},
        "logits": {"file": "logits.bin", "dtype": "float32", "shape": list(logits.shape)},
        "tolerance": {"nll_relative": NLL_RTOL, "logits_absolute": LOGITS_ATOL},
        "sensitivity": sensitivity,
    }
    write_json(os.path.join(d, "expected.json"), expected)
    worst = min((s["relative_delta"] for s in sensitivity if "note" not in s), default=float("nan"))
    print(f"{case.name:28s} NLL {total:12.6f}  ppl {expected['nll']['perplexity']:8.3f}  "
          f"smallest sensitivity {worst:.3e}", flush=True)


# ---- comparing two generated trees ---------------------------------------------------------------

def close(a, b, rtol):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
    return a == b


def compare(a_dir, b_dir):
    """Every file of both trees byte for byte, but expected.json's figures and logits.bin, which are
    compared within 1e-9 relative and 1e-6 absolute (a forward on another CPU may round its last bits
    differently). Returns the number of differences."""
    bad = 0
    names = lambda d: {os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs}
    fa, fb = names(a_dir), names(b_dir)
    for f in sorted(fa ^ fb):
        print(f"only in {a_dir if f in fa else b_dir}: {f}")
        bad += 1
    for f in sorted(fa & fb):
        pa, pb = os.path.join(a_dir, f), os.path.join(b_dir, f)
        ba, bb = open(pa, "rb").read(), open(pb, "rb").read()
        if ba == bb:
            continue
        base = os.path.basename(f)
        if base == "expected.json":
            ja, jb = json.loads(ba), json.loads(bb)
            for j in (ja, jb):
                j.get("made_by", {}).pop("torch", None)
            if close(ja, jb, 1e-9):
                continue
        elif base == "logits.bin" and len(ba) == len(bb):
            la, lb = np.frombuffer(ba, "<f4"), np.frombuffer(bb, "<f4")
            diff = float(np.max(np.abs(la - lb)))
            if diff <= 1e-6:
                continue
            print(f"{f}: max |difference| {diff:.3e}")
        print(f"differs: {f}")
        bad += 1
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="directory to write the cases into (each case's directory is replaced)")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two generated trees and exit")
    args = ap.parse_args()
    if args.compare:
        bad = compare(*args.compare)
        print("the same" if bad == 0 else f"{bad} difference(s)")
        return 1 if bad else 0
    if not args.out:
        ap.error("--out or --compare is required")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    wanted = [c for c in args.cases.split(",") if c]
    unknown = set(wanted) - {c.name for c in CASES}
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    os.makedirs(args.out, exist_ok=True)
    for case in CASES:
        if not wanted or case.name in wanted:
            make_case(case, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
