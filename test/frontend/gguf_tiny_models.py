#!/usr/bin/env python3
"""Writes the tiny GGUF models gguf_checkpoint_test reads, each beside the Hugging Face safetensors
checkpoint it came from, and an evaluation set:

  testdata/gguf/tiny-llama/      model.gguf (llama, tied embeddings, Q/K rows permuted as llama.cpp's
                                 convert_hf_to_gguf.py does; tensors in Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16,
                                 BF16, F32) and hf/ (config.json, model.safetensors: F32, the values gguf-py's
                                 numpy dequantizers give for the GGUF's blocks, i.e. the checkpoint a
                                 dequantizing converter makes)
  testdata/gguf/tiny-qwen2/      model.gguf (qwen2: q/k/v biases, untied lm_head, F16, not permuted) and
                                 hf/ (the same tensors in F16 safetensors)
  testdata/gguf/tiny-qwen3/      model.gguf (qwen3: q/k norms, head_dim 32 as attention.key_length, tied) and hf/
  testdata/gguf/tiny-gemma3/     model.gguf (gemma3: every norm stored as 1 + w as llama.cpp's converter does, the
                                 pre/post norm names, a sliding window of 8 with every sixth layer full, linear
                                 RoPE scaling of the full layers, one Q8_0 tensor) and hf/ (Gemma3TextConfig keys)
  testdata/gguf/tiny-phi3/       model.gguf (phi3: fused attn_qkv / ffn_up, partial rotary, LongRoPE factor tensors,
                                 sliding window, tied) and hf/ (its Phi-3 checkpoint)
  testdata/gguf/tiny-qwen3moe/   model.gguf (qwen3moe: four experts, top two, each projection's experts stacked in one
                                 3-D tensor as llama.cpp writes them, one of them Q8_0) and hf/ (per-expert tensors)
  testdata/gguf/tiny_eval.jsonl  input_ids records

The test: each GGUF gives the same evaluation figures as its hf/ checkpoint. Rerun only to refresh:
  /work/venv/tf/bin/python test/frontend/gguf_tiny_models.py   (needs gguf, numpy, safetensors)
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "testdata", "gguf")


def permute(w, n_head, n_head_kv):
    # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def rand(rng, *shape, scale=0.2):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def write_gguf(path, arch, meta, tensors):
    w = gguf.GGUFWriter(path, arch)
    for fn, args in meta:
        getattr(w, fn)(*args)
    for name, data, qtype in tensors:
        if qtype in (T.F32, T.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def encode(x, qtype):
    """The GGUF payload of float32 x in qtype, and its float32 values as a reader sees them."""
    if qtype == T.F32:
        return x, x
    if qtype == T.F16:
        h = x.astype(np.float16)
        return h, h.astype(np.float32)
    q = gguf.quants.quantize(x, qtype)
    return q, gguf.quants.dequantize(q, qtype)


def tiny_llama(rng):
    hidden, inter, layers, heads, kv, vocab = 64, 64, 2, 4, 2, 96
    head_dim = hidden // heads
    d = os.path.join(OUT, "tiny-llama")
    os.makedirs(os.path.join(d, "hf"), exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2,
    }
    types = {"attn_q": T.Q4_0, "attn_k": T.Q4_1, "attn_v": T.Q5_0, "attn_output": T.Q5_1,
             "ffn_gate": T.Q8_0, "ffn_up": T.F16, "ffn_down": T.BF16}
    hf_names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                "ffn_down": "mlp.down_proj"}
    shapes = {"attn_q": (hidden, hidden), "attn_k": (kv * head_dim, hidden), "attn_v": (kv * head_dim, hidden),
              "attn_output": (hidden, hidden), "ffn_gate": (inter, hidden), "ffn_up": (inter, hidden),
              "ffn_down": (hidden, inter)}
    st, gt = {}, []
    payload, values = encode(rand(rng, vocab, hidden, scale=0.5), T.Q8_0)
    gt.append(("token_embd.weight", payload, T.Q8_0))
    st["model.embed_tokens.weight"] = values
    for i in range(layers):
        norm = (1 + rand(rng, hidden, scale=0.1))
        gt.append((f"blk.{i}.attn_norm.weight", norm, T.F32))
        st[f"model.layers.{i}.input_layernorm.weight"] = norm
        for g, qtype in types.items():
            # Layer 1 swaps the formats around, so that each tensor kind meets more than one.
            if i == 1:
                qtype = {T.Q4_0: T.Q5_1, T.Q5_1: T.Q4_0, T.Q8_0: T.BF16, T.BF16: T.Q8_0}.get(qtype, qtype)
            hf = rand(rng, *shapes[g])
            # The GGUF holds the permuted rows; the HF checkpoint the unpermuted dequantized values.
            gg = permute(hf, heads, heads) if g == "attn_q" else permute(hf, heads, kv) if g == "attn_k" else hf
            if qtype == T.BF16:
                b = (gg.view(np.uint32) >> 16).astype(np.uint16)   # truncate: exact BF16 values
                payload, deq = b.view(np.uint8), gguf.quants.dequantize(b.view(np.uint8), T.BF16)
            else:
                payload, deq = encode(gg, qtype)
            if g == "attn_q":
                deq = permute_back(deq, heads)
            elif g == "attn_k":
                deq = permute_back(deq, kv)
            gt.append((f"blk.{i}.{g}.weight", payload, qtype))
            st[f"model.layers.{i}.{hf_names[g]}.weight"] = np.ascontiguousarray(deq)
        norm = (1 + rand(rng, hidden, scale=0.1))
        gt.append((f"blk.{i}.ffn_norm.weight", norm, T.F32))
        st[f"model.layers.{i}.post_attention_layernorm.weight"] = norm
    final = (1 + rand(rng, hidden, scale=0.1))
    gt.append(("output_norm.weight", final, T.F32))
    st["model.norm.weight"] = final
    meta = [("add_context_length", (128,)), ("add_embedding_length", (hidden,)), ("add_block_count", (layers,)),
            ("add_feed_forward_length", (inter,)), ("add_head_count", (heads,)), ("add_head_count_kv", (kv,)),
            ("add_layer_norm_rms_eps", (1e-5,)), ("add_rope_freq_base", (100000.0,)),
            ("add_rope_dimension_count", (head_dim,)), ("add_vocab_size", (vocab,)),
            ("add_bos_token_id", (1,)), ("add_eos_token_id", (2,))]
    write_gguf(os.path.join(d, "model.gguf"), "llama", meta, gt)
    json.dump(config, open(os.path.join(d, "hf", "config.json"), "w"), indent=2)
    save_file(st, os.path.join(d, "hf", "model.safetensors"), metadata={"format": "pt"})


def permute_back(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def tiny_qwen2(rng):
    hidden, inter, layers, heads, kv, vocab = 64, 64, 1, 4, 2, 96
    head_dim = hidden // heads
    d = os.path.join(OUT, "tiny-qwen2")
    os.makedirs(os.path.join(d, "hf"), exist_ok=True)
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2, "use_sliding_window": False,
    }
    f16 = lambda *s, scale=0.2: rand(rng, *s, scale=scale).astype(np.float16)
    st, gt = {}, []
    def add(g, hf, x):
        gt.append((g, x, T.F16 if x.dtype == np.float16 else T.F32))
        st[hf] = x
    add("token_embd.weight", "model.embed_tokens.weight", f16(vocab, hidden, scale=0.5))
    for i in range(layers):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", q + "input_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        for g, h, rows in [("attn_q", "self_attn.q_proj", hidden), ("attn_k", "self_attn.k_proj", kv * head_dim),
                           ("attn_v", "self_attn.v_proj", kv * head_dim)]:
            add(p + g + ".weight", q + h + ".weight", f16(rows, hidden))
            add(p + g + ".bias", q + h + ".bias", rand(rng, rows, scale=0.1))
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", f16(hidden, hidden))
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        add(p + "ffn_gate.weight", q + "mlp.gate_proj.weight", f16(inter, hidden))
        add(p + "ffn_up.weight", q + "mlp.up_proj.weight", f16(inter, hidden))
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", f16(hidden, inter))
    add("output_norm.weight", "model.norm.weight", 1 + rand(rng, hidden, scale=0.1))
    add("output.weight", "lm_head.weight", f16(vocab, hidden, scale=0.3))
    meta = [("add_context_length", (128,)), ("add_embedding_length", (hidden,)), ("add_block_count", (layers,)),
            ("add_feed_forward_length", (inter,)), ("add_head_count", (heads,)), ("add_head_count_kv", (kv,)),
            ("add_layer_norm_rms_eps", (1e-6,)), ("add_rope_freq_base", (1000000.0,)),
            ("add_bos_token_id", (1,)), ("add_eos_token_id", (2,))]
    write_gguf(os.path.join(d, "model.gguf"), "qwen2", meta, gt)
    json.dump(config, open(os.path.join(d, "hf", "config.json"), "w"), indent=2)
    save_file(st, os.path.join(d, "hf", "model.safetensors"), metadata={"format": "pt"})


def tiny_qwen3(rng):
    """qwen3: per-head q/k RMSNorm (attn_q_norm / attn_k_norm), head_dim 32 (not hidden / heads = 16) given as
    attention.key_length, no biases, tied embeddings (no output tensor), F16 and F32."""
    hidden, inter, layers, heads, kv, vocab, head_dim = 64, 64, 2, 4, 2, 96, 32
    d = os.path.join(OUT, "tiny-qwen3")
    os.makedirs(os.path.join(d, "hf"), exist_ok=True)
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": True,
        "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2, "use_sliding_window": False,
        "attention_bias": False,
    }
    f16 = lambda *s, scale=0.2: rand(rng, *s, scale=scale).astype(np.float16)
    st, gt = {}, []
    def add(g, hf, x):
        gt.append((g, x, T.F16 if x.dtype == np.float16 else T.F32))
        st[hf] = x
    add("token_embd.weight", "model.embed_tokens.weight", f16(vocab, hidden, scale=0.5))
    for i in range(layers):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", q + "input_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        for g, h, rows in [("attn_q", "self_attn.q_proj", heads * head_dim), ("attn_k", "self_attn.k_proj", kv * head_dim),
                           ("attn_v", "self_attn.v_proj", kv * head_dim)]:
            add(p + g + ".weight", q + h + ".weight", f16(rows, hidden))
        add(p + "attn_q_norm.weight", q + "self_attn.q_norm.weight", 1 + rand(rng, head_dim, scale=0.5))
        add(p + "attn_k_norm.weight", q + "self_attn.k_norm.weight", 1 + rand(rng, head_dim, scale=0.5))
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", f16(hidden, heads * head_dim))
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        add(p + "ffn_gate.weight", q + "mlp.gate_proj.weight", f16(inter, hidden))
        add(p + "ffn_up.weight", q + "mlp.up_proj.weight", f16(inter, hidden))
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", f16(hidden, inter))
    add("output_norm.weight", "model.norm.weight", 1 + rand(rng, hidden, scale=0.1))
    meta = [("add_context_length", (128,)), ("add_embedding_length", (hidden,)), ("add_block_count", (layers,)),
            ("add_feed_forward_length", (inter,)), ("add_head_count", (heads,)), ("add_head_count_kv", (kv,)),
            ("add_key_length", (head_dim,)), ("add_value_length", (head_dim,)),
            ("add_layer_norm_rms_eps", (1e-6,)), ("add_rope_freq_base", (1000000.0,)),
            ("add_bos_token_id", (1,)), ("add_eos_token_id", (2,))]
    write_gguf(os.path.join(d, "model.gguf"), "qwen3", meta, gt)
    json.dump(config, open(os.path.join(d, "hf", "config.json"), "w"), indent=2)
    save_file(st, os.path.join(d, "hf", "model.safetensors"), metadata={"format": "pt"})


def tiny_gemma3(rng):
    """gemma3: six layers (the sixth full attention, the others sliding over 8 tokens with RoPE base 10000), GELU
    gating, q/k norms, four norms per layer, every norm weight stored as 1 + w (float32, as the reader's w + 1
    gives it back), tied embeddings, F16 and one Q8_0 tensor."""
    hidden, inter, layers, heads, kv, vocab, head_dim, window = 32, 64, 6, 2, 1, 96, 16, 8
    d = os.path.join(OUT, "tiny-gemma3")
    os.makedirs(os.path.join(d, "hf"), exist_ok=True)
    config = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": head_dim, "vocab_size": vocab, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "sliding_window": window,
        "sliding_window_pattern": 6, "query_pre_attn_scalar": head_dim, "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True, "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2,
    }
    f16 = lambda *s, scale=0.2: rand(rng, *s, scale=scale).astype(np.float16)
    st, gt = {}, []
    def add(g, hf, x):
        gt.append((g, x, T.F16 if x.dtype == np.float16 else T.F32))
        st[hf] = x
    def norm(g, hf, n):
        stored = (np.float32(1) + rand(rng, n, scale=0.5)).astype(np.float32)
        gt.append((g, stored, T.F32))
        st[hf] = stored - np.float32(1)   # what the checkpoint held, as the reader recovers it
    add("token_embd.weight", "model.embed_tokens.weight", f16(vocab, hidden, scale=0.5))
    for i in range(layers):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        norm(p + "attn_norm.weight", q + "input_layernorm.weight", hidden)
        for g, h, rows in [("attn_q", "self_attn.q_proj", heads * head_dim), ("attn_k", "self_attn.k_proj", kv * head_dim),
                           ("attn_v", "self_attn.v_proj", kv * head_dim)]:
            add(p + g + ".weight", q + h + ".weight", f16(rows, hidden))
        norm(p + "attn_q_norm.weight", q + "self_attn.q_norm.weight", head_dim)
        norm(p + "attn_k_norm.weight", q + "self_attn.k_norm.weight", head_dim)
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", f16(hidden, heads * head_dim))
        norm(p + "post_attention_norm.weight", q + "post_attention_layernorm.weight", hidden)
        norm(p + "ffn_norm.weight", q + "pre_feedforward_layernorm.weight", hidden)
        add(p + "ffn_gate.weight", q + "mlp.gate_proj.weight", f16(inter, hidden))
        if i == 0:
            payload, deq = encode(rand(rng, inter, hidden), T.Q8_0)
            gt.append((p + "ffn_up.weight", payload, T.Q8_0))
            st[q + "mlp.up_proj.weight"] = np.ascontiguousarray(deq)
        else:
            add(p + "ffn_up.weight", q + "mlp.up_proj.weight", f16(inter, hidden))
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", f16(hidden, inter))
        norm(p + "post_ffw_norm.weight", q + "post_feedforward_layernorm.weight", hidden)
    norm("output_norm.weight", "model.norm.weight", hidden)
    meta = [("add_context_length", (128,)), ("add_embedding_length", (hidden,)), ("add_block_count", (layers,)),
            ("add_feed_forward_length", (inter,)), ("add_head_count", (heads,)), ("add_head_count_kv", (kv,)),
            ("add_key_length", (head_dim,)), ("add_value_length", (head_dim,)),
            ("add_layer_norm_rms_eps", (1e-6,)), ("add_rope_freq_base", (1000000.0,)),
            ("add_rope_scaling_type", (gguf.RopeScalingType.LINEAR,)), ("add_rope_scaling_factor", (2.0,)),
            ("add_sliding_window", (window,)), ("add_bos_token_id", (1,)), ("add_eos_token_id", (2,))]
    write_gguf(os.path.join(d, "model.gguf"), "gemma3", meta, gt)
def tiny_phi3(rng):
    """phi3 (Phi-4-mini's form): fused attn_qkv (q|k|v, Q8_0) and ffn_up (gate|up, F16) as llama.cpp keeps them,
    partial rotary (rope.dimension_count 12 of head_dim 16), LongRoPE factors as the tensors rope_factors_short /
    rope_factors_long with rope.scaling.original_context_length 32 (the 41-id evaluation sequences use the long
    ones), sliding_window 24, tied embeddings."""
    hidden, inter, layers, heads, kv, vocab = 64, 64, 2, 4, 2, 96
    head_dim, rot = hidden // heads, 12
    short = [1.0, 1.0, 1.125, 1.25, 1.625, 2.0]   # float32-exact: llama.cpp stores the factors as F32
    long = [1.0, 1.5, 2.5, 4.0, 6.0, 9.0]
    d = os.path.join(OUT, "tiny-phi3")
    os.makedirs(os.path.join(d, "hf"), exist_ok=True)
    config = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 128,
        "original_max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "partial_rotary_factor": rot / head_dim,
        "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long},
        "sliding_window": 24, "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None,
    }
    f16 = lambda *s, scale=0.2: rand(rng, *s, scale=scale).astype(np.float16)
    st, gt = {}, []
    def add(g, hf, x, qtype=None):
        if qtype is None:
            gt.append((g, x, T.F16 if x.dtype == np.float16 else T.F32))
            st[hf] = x
        else:
            payload, values = encode(x, qtype)
            gt.append((g, payload, qtype))
            st[hf] = np.ascontiguousarray(values)
    add("token_embd.weight", "model.embed_tokens.weight", f16(vocab, hidden, scale=0.5))
    for i in range(layers):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", q + "input_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        add(p + "attn_qkv.weight", q + "self_attn.qkv_proj.weight", rand(rng, (heads + 2 * kv) * head_dim, hidden), T.Q8_0)
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", f16(hidden, hidden))
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        add(p + "ffn_up.weight", q + "mlp.gate_up_proj.weight", f16(2 * inter, hidden))
        add(p + "ffn_down.weight", q + "mlp.down_proj.weight", f16(hidden, inter))
        if i == 0:   # llama.cpp writes the factors before the first block's tensors
            gt.append(("rope_factors_long.weight", np.array(long, dtype=np.float32), T.F32))
            gt.append(("rope_factors_short.weight", np.array(short, dtype=np.float32), T.F32))
    add("output_norm.weight", "model.norm.weight", 1 + rand(rng, hidden, scale=0.1))
    scale = 128 / 32
    meta = [("add_context_length", (128,)), ("add_embedding_length", (hidden,)), ("add_block_count", (layers,)),
            ("add_feed_forward_length", (inter,)), ("add_head_count", (heads,)), ("add_head_count_kv", (kv,)),
            ("add_layer_norm_rms_eps", (1e-5,)), ("add_rope_freq_base", (10000.0,)),
            ("add_rope_dimension_count", (rot,)), ("add_rope_scaling_orig_ctx_len", (32,)),
            ("add_rope_scaling_attn_factors", (float(np.sqrt(1 + np.log(scale) / np.log(32))),)),
            ("add_sliding_window", (24,)), ("add_bos_token_id", (1,)), ("add_eos_token_id", (2,))]
    write_gguf(os.path.join(d, "model.gguf"), "phi3", meta, gt)
    json.dump(config, open(os.path.join(d, "hf", "config.json"), "w"), indent=2)
    save_file(st, os.path.join(d, "hf", "model.safetensors"), metadata={"format": "pt"})


def tiny_qwen3moe(rng):
    """qwen3moe: the router ffn_gate_inp and each projection's experts stacked [experts, rows, cols] (ffn_gate_exps,
    ffn_up_exps in Q8_0, ffn_down_exps), q/k norms, head_dim 16, tied; hf/ holds the per-expert tensors
    save_pretrained writes."""
    hidden, inter, moe_inter, layers, heads, kv, vocab, head_dim, experts = 64, 96, 32, 2, 4, 2, 96, 16, 4
    d = os.path.join(OUT, "tiny-qwen3moe")
    os.makedirs(os.path.join(d, "hf"), exist_ok=True)
    config = {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": hidden,
        "intermediate_size": inter, "moe_intermediate_size": moe_inter, "num_experts": experts,
        "num_experts_per_tok": 2, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": head_dim,
        "vocab_size": vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "float16", "bos_token_id": 1,
        "eos_token_id": 2, "use_sliding_window": False, "attention_bias": False,
    }
    f16 = lambda *s, scale=0.2: rand(rng, *s, scale=scale).astype(np.float16)
    st, gt = {}, []
    def add(g, hf, x):
        gt.append((g, x, T.F16 if x.dtype == np.float16 else T.F32))
        st[hf] = x
    add("token_embd.weight", "model.embed_tokens.weight", f16(vocab, hidden, scale=0.5))
    for i in range(layers):
        p, q = f"blk.{i}.", f"model.layers.{i}."
        add(p + "attn_norm.weight", q + "input_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        for g, h, rows in [("attn_q", "self_attn.q_proj", heads * head_dim), ("attn_k", "self_attn.k_proj", kv * head_dim),
                           ("attn_v", "self_attn.v_proj", kv * head_dim)]:
            add(p + g + ".weight", q + h + ".weight", f16(rows, hidden))
        add(p + "attn_q_norm.weight", q + "self_attn.q_norm.weight", 1 + rand(rng, head_dim, scale=0.5))
        add(p + "attn_k_norm.weight", q + "self_attn.k_norm.weight", 1 + rand(rng, head_dim, scale=0.5))
        add(p + "attn_output.weight", q + "self_attn.o_proj.weight", f16(hidden, heads * head_dim))
        add(p + "ffn_norm.weight", q + "post_attention_layernorm.weight", 1 + rand(rng, hidden, scale=0.1))
        add(p + "ffn_gate_inp.weight", q + "mlp.gate.weight", rand(rng, experts, hidden, scale=1.0))
        for g, h, rows, cols, qtype in [("ffn_gate_exps", "gate_proj", moe_inter, hidden, T.F16),
                                        ("ffn_up_exps", "up_proj", moe_inter, hidden, T.Q8_0),
                                        ("ffn_down_exps", "down_proj", hidden, moe_inter, T.F16)]:
            payload, deq = encode(rand(rng, experts, rows, cols), qtype)
            gt.append((p + g + ".weight", payload, qtype))
            for e in range(experts):
                v = deq[e]
                st[q + f"mlp.experts.{e}.{h}.weight"] = np.ascontiguousarray(v.astype(np.float16) if qtype == T.F16 else v)
    add("output_norm.weight", "model.norm.weight", 1 + rand(rng, hidden, scale=0.1))
    meta = [("add_context_length", (128,)), ("add_embedding_length", (hidden,)), ("add_block_count", (layers,)),
            ("add_feed_forward_length", (inter,)), ("add_head_count", (heads,)), ("add_head_count_kv", (kv,)),
            ("add_key_length", (head_dim,)), ("add_value_length", (head_dim,)),
            ("add_layer_norm_rms_eps", (1e-6,)), ("add_rope_freq_base", (1000000.0,)),
            ("add_expert_count", (experts,)), ("add_expert_used_count", (2,)),
            ("add_expert_feed_forward_length", (moe_inter,)),
            ("add_bos_token_id", (1,)), ("add_eos_token_id", (2,))]
    write_gguf(os.path.join(d, "model.gguf"), "qwen3moe", meta, gt)
    json.dump(config, open(os.path.join(d, "hf", "config.json"), "w"), indent=2)
    save_file(st, os.path.join(d, "hf", "model.safetensors"), metadata={"format": "pt"})


def main():
    rng = np.random.default_rng(7)
    tiny_llama(rng)
    tiny_qwen2(rng)
    with open(os.path.join(OUT, "tiny_eval.jsonl"), "w") as f:
        for _ in range(6):
            f.write(json.dumps({"input_ids": [1] + [int(x) for x in rng.integers(3, 96, size=40)]}) + "\n")
    tiny_qwen3(np.random.default_rng(11))   # its own generator: the models above keep their bytes
    tiny_gemma3(np.random.default_rng(13))
    tiny_phi3(np.random.default_rng(13))   # each its own generator (same seed, separate streams)
    tiny_qwen3moe(np.random.default_rng(17))
    for root, _, files in os.walk(OUT):
        for n in files:
            print(os.path.join(root, n), os.path.getsize(os.path.join(root, n)))


if __name__ == "__main__":
    main()
