#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<harness>/ (committed; rerun only to refresh them).

Sources: testdata/ (configs, calibration sets), ../shared/models/stories260K (config.json,
tokenizer.model, calibration text), a pruned copy of fp4c-synth's byte-level BPE tokenizer, hand-made
inputs modelled on the test suite's (tokenizer components, pipelines, recipe files), and artifacts,
a manifest and a statistics cache that fp4c itself makes from the tiny one-layer model of
fuzz/tiny_reference.h. Needs a built fp4c and fp4c-synth (--bin, default build/).

  python3 fuzz/make_seeds.py [--bin build] [--shared ../shared]
"""
import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SEP = b"\n=====\n"   # fuzz_support.h's part separator


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def parts(*ps):
    return SEP.join(p.encode() if isinstance(p, str) else p for p in ps)


def compact(j):
    return json.dumps(j, separators=(",", ":"), ensure_ascii=False)


# --- safetensors -------------------------------------------------------------------------------------

def bf16(x):
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    b += 0x7FFF + ((b >> 16) & 1)   # round to nearest even
    return struct.pack("<H", (b >> 16) & 0xFFFF)


def safetensors_bytes(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, off, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = compact(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 32,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
    "attention_bias": False, "mlp_bias": False,
}


def tiny_tensors():
    rng = random.Random(1)
    p = "model.layers.0."
    spec = [("model.embed_tokens.weight", [32, 32], 0.02, 0), (p + "input_layernorm.weight", [32], 0.05, 1),
            (p + "mlp.down_proj.weight", [32, 32], 0.03, 0), (p + "mlp.gate_proj.weight", [32, 32], 0.03, 0),
            (p + "mlp.up_proj.weight", [32, 32], 0.03, 0), (p + "post_attention_layernorm.weight", [32], 0.05, 1),
            (p + "self_attn.k_proj.weight", [16, 32], 0.05, 0), (p + "self_attn.o_proj.weight", [32, 32], 0.05, 0),
            (p + "self_attn.q_proj.weight", [32, 32], 0.05, 0), (p + "self_attn.v_proj.weight", [16, 32], 0.05, 0),
            ("model.norm.weight", [32], 0.05, 1)]
    out = []
    for name, shape, scale, offset in spec:
        n = 1
        for d in shape:
            n *= d
        out.append((name, "BF16", shape, b"".join(bf16(offset + scale * rng.gauss(0, 1)) for _ in range(n))))
    return out


def tensor_lines(config, tied=None):
    """config_fuzz's tensor list for a Llama/Qwen2-shaped config."""
    h, i = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    hd = config.get("head_dim", h // heads)
    qwen = config["architectures"][0] == "Qwen2ForCausalLM"
    lines = [f"model.embed_tokens.weight BF16 {config['vocab_size']},{h}"]
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        lines += [f"{p}input_layernorm.weight BF16 {h}", f"{p}post_attention_layernorm.weight BF16 {h}",
                  f"{p}mlp.down_proj.weight BF16 {h},{i}", f"{p}mlp.gate_proj.weight BF16 {i},{h}",
                  f"{p}mlp.up_proj.weight BF16 {i},{h}", f"{p}self_attn.q_proj.weight BF16 {heads * hd},{h}",
                  f"{p}self_attn.k_proj.weight BF16 {kv * hd},{h}", f"{p}self_attn.v_proj.weight BF16 {kv * hd},{h}",
                  f"{p}self_attn.o_proj.weight BF16 {h},{heads * hd}"]
        if qwen:
            lines += [f"{p}self_attn.q_proj.bias BF16 {heads * hd}", f"{p}self_attn.k_proj.bias BF16 {kv * hd}",
                      f"{p}self_attn.v_proj.bias BF16 {kv * hd}"]
    lines.append(f"model.norm.weight BF16 {h}")
    if not (config.get("tie_word_embeddings") if tied is None else tied):
        lines.append(f"lm_head.weight BF16 {config['vocab_size']},{h}")
    return "\n".join(lines) + "\n"


# --- tokenizers --------------------------------------------------------------------------------------

def pruned_synth_tokenizer(path, merges_kept):
    """fp4c-synth's tokenizer.json with only the byte tokens, the first merges and the added tokens."""
    j = json.load(open(path))
    vocab = j["model"]["vocab"]
    by_id = {v: k for k, v in vocab.items()}
    keep = {k: v for k, v in vocab.items() if v < 256}
    merges = j["model"]["merges"][:merges_kept]
    for m in merges:
        a, b = m.split(" ") if isinstance(m, str) else m
        tok = a + b
        if tok in vocab:
            keep[tok] = vocab[tok]
    # ids must stay dense: renumber the kept tokens in id order, the added tokens after them
    order = sorted(keep, key=lambda k: keep[k])
    new_vocab = {k: n for n, k in enumerate(order)}
    j["model"]["vocab"] = new_vocab
    j["model"]["merges"] = merges
    for n, t in enumerate(j["added_tokens"]):
        t["id"] = len(new_vocab) + n
    return j


def bpe_json(vocab, merges, **kw):
    j = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None, "post_processor": None,
         "decoder": None,
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False, "byte_fallback": False,
                   "ignore_merges": False, "vocab": vocab, "merges": merges}}
    for k, v in kw.items():
        if k in ("unk_token", "fuse_unk", "byte_fallback", "ignore_merges"):
            j["model"][k] = v
        else:
            j[k] = v
    return j


def added(i, content, special=True):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": not special, "special": special}


def template_bos(bos, i):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {bos: {"id": bos, "ids": [i], "tokens": [bos]}}}


def sentencepiece_style_bpe():
    """A Llama 2 style tokenizer.json: Prepend/Replace normalizers, byte fallback, <unk>."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t in ["\u2581", "a", "b", "c", "h", "e", "l", "o", "w", "r", "d", "\u2581h", "he", "ll", "llo", "\u2581w",
              "or", "ld", "\u2581hello", "\u2581world", "\u2581he"]:
        vocab.setdefault(t, len(vocab))
    merges = ["\u2581 h", "h e", "l l", "ll o", "\u2581 w", "o r", "l d", "\u2581h e"]
    j = bpe_json(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    j["added_tokens"] = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "\u2581"}]}
    j["post_processor"] = template_bos("<s>", 1)
    j["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return j


def metaspace_bpe():
    j = sentencepiece_style_bpe()
    j["normalizer"] = None
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    j["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    return j


# --- main --------------------------------------------------------------------------------------------

# --- GGUF --------------------------------------------------------------------------------------------

def gguf_bytes(kvs, tensors, alignment=32, version=3):
    """kvs: list of (key, type id, packed value bytes); tensors: list of (name, ne, type id, raw bytes).
    Tensor data laid out as ggml lays it: in order, each padded to the alignment."""
    s = lambda b: struct.pack("<Q", len(b)) + b
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, val in kvs:
        out += s(key.encode()) + struct.pack("<I", t) + val
    pad = lambda n: b"\0" * (-n % alignment)
    off, data = 0, b""
    for name, ne, t, raw in tensors:
        out += s(name.encode()) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", t, off)
        data += raw + pad(len(raw))
        off = len(data)
    return out + pad(len(out)) + data


def gguf_seeds():
    s = lambda b: struct.pack("<Q", len(b)) + b
    arr = lambda t, vals: struct.pack("<IQ", t, len(vals)) + b"".join(vals)
    rng = random.Random(3)
    f32 = lambda n: b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(n))
    meta = [("general.architecture", 8, s(b"llama")), ("llama.block_count", 4, struct.pack("<I", 1)),
            ("llama.rope.freq_base", 6, struct.pack("<f", 10000.0)), ("test.i64", 11, struct.pack("<q", -5)),
            ("test.f64", 12, struct.pack("<d", 0.5)), ("test.bool", 7, b"\1"),
            ("tokenizer.ggml.tokens", 9, arr(8, [s(b"a"), s(b"b"), s(b"\xe2\x96\x81c")])),
            ("tokenizer.ggml.scores", 9, arr(6, [struct.pack("<f", -i) for i in range(3)])),
            ("test.nested", 9, arr(9, [arr(0, [b"\1", b"\2"]), arr(8, [s(b"x")])]))]
    put("gguf_fuzz", "tiny_f32", gguf_bytes(meta, [("token_embd.weight", [8, 3], 0, f32(24)),
                                                    ("output_norm.weight", [8], 0, f32(8))]))
    # One tensor of each block format fp4c dequantizes (random blocks), and F16/BF16.
    blocks = [(2, 32, 18), (3, 32, 20), (6, 32, 22), (7, 32, 24), (8, 32, 34), (12, 256, 144), (13, 256, 176),
              (14, 256, 210)]
    ts = [("t%d" % t, [n], t, bytes(rng.randrange(256) for _ in range(size))) for t, n, size in blocks]
    ts += [("f16", [4], 1, bytes(rng.randrange(256) for _ in range(8))),
           ("bf16", [4], 30, bytes(rng.randrange(256) for _ in range(8)))]
    put("gguf_fuzz", "block_formats", gguf_bytes([], ts))
    put("gguf_fuzz", "align64_v2", gguf_bytes([("general.alignment", 4, struct.pack("<I", 64))],
                                              [("a", [4], 0, f32(4)), ("b", [2, 2], 0, f32(4))], alignment=64, version=2))
    put("gguf_fuzz", "unread_type_q2k", gguf_bytes([], [("q", [256], 10, bytes(84))]))


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"make_seeds: {' '.join(cmd)} failed:\n{r.stdout}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build"))
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    fp4c, synth = os.path.join(args.bin, "fp4c"), os.path.join(args.bin, "fp4c-synth")
    stories = os.path.join(args.shared, "models", "stories260K")
    shutil.rmtree(CORPUS, ignore_errors=True)
    work = tempfile.mkdtemp(prefix="fp4c-seeds-")
    try:
        # The tiny model, and fp4c's artifacts, manifest and statistics cache made from it.
        model = os.path.join(work, "model")
        os.makedirs(model)
        tensors = tiny_tensors()
        json.dump(TINY_CONFIG, open(os.path.join(model, "config.json"), "w"), indent=2)
        st = safetensors_bytes(tensors, {"format": "pt"})
        open(os.path.join(model, "model.safetensors"), "wb").write(st)
        rng = random.Random(2)
        calib = os.path.join(work, "calib.jsonl")
        with open(calib, "w") as f:
            for _ in range(8):
                f.write(compact({"input_ids": [1] + [rng.randrange(3, 32) for _ in range(15)]}) + "\n")
        cache = os.path.join(work, "cache")
        arts = {}
        for name, extra in [("w4a16", ["--scheme", "w4a16"]),
                            ("w4a4", ["--calib", calib, "--stats-cache", cache]),
                            ("mxfp4a16", ["--scheme", "mxfp4a16"]),
                            ("mxfp4", ["--scheme", "mxfp4"]),
                            ("modelopt-w4a16", ["--scheme", "w4a16", "--format", "modelopt"]),
                            ("modelopt-w4a4", ["--calib", calib, "--format", "modelopt"])]:
            out = os.path.join(work, name)
            run([fp4c, "quantize", "--model", model, "--out", out, "--threads", "1"] + extra)
            arts[name] = out
        rd = lambda *p: open(os.path.join(*p), "rb").read()

        gguf_seeds()

        # safetensors_fuzz
        put("safetensors_fuzz", "tiny_bf16", st)
        put("safetensors_fuzz", "nvfp4_w4a16", rd(arts["w4a16"], "model.safetensors"))
        put("safetensors_fuzz", "empty_header", safetensors_bytes([]))
        put("safetensors_fuzz", "metadata_only", safetensors_bytes([], {"format": "pt", "total_size": "0"}))
        put("safetensors_fuzz", "dtypes", safetensors_bytes(
            [("a", "F32", [], b"\0\0\x80\x3f"), ("b", "F16", [2], b"\0\x3c\0\xc0"), ("c", "U8", [1, 3], b"\1\2\3"),
             ("d", "F8_E4M3", [2], b"\x38\xb8"), ("e", "I32", [1], b"\7\0\0\0"), ("f", "I64", [0], b""),
             ("g", "BF16", [2, 1], b"\x80\x3f\0\0")]))

        # safetensors_index_fuzz: the tiny model in two shards
        half = len(tensors) // 2
        s1, s2 = safetensors_bytes(tensors[:half]), safetensors_bytes(tensors[half:])
        wm = {t[0]: "model-00001-of-00002.safetensors" for t in tensors[:half]}
        wm.update({t[0]: "model-00002-of-00002.safetensors" for t in tensors[half:]})
        index = {"metadata": {"total_size": len(s1) + len(s2) - 16}, "weight_map": dict(sorted(wm.items()))}
        put("safetensors_index_fuzz", "two_shards", parts(json.dumps(index, indent=2), s1, s2))
        put("safetensors_index_fuzz", "string_total_size",
            parts(compact({"metadata": {"total_size": "123", "format": {"x": [1]}}, "weight_map": {}})))
        put("safetensors_index_fuzz", "no_metadata",
            parts(compact({"weight_map": {"a": "model-00001-of-00002.safetensors"}}),
                  safetensors_bytes([("a", "F32", [1], b"\0\0\0\0")])))

        # config_fuzz
        for f in sorted(os.listdir(os.path.join(ROOT, "testdata", "configs"))):
            put("config_fuzz", f.replace(".json", ""), rd(ROOT, "testdata", "configs", f))
        sc = json.load(open(os.path.join(stories, "config.json")))
        put("config_fuzz", "stories260K_with_tensors", parts(json.dumps(sc, indent=2), tensor_lines(sc)))
        put("config_fuzz", "tiny_with_tensors", parts(json.dumps(TINY_CONFIG, indent=2), tensor_lines(TINY_CONFIG)))
        qwen = dict(TINY_CONFIG, architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=False)
        del qwen["head_dim"]
        put("config_fuzz", "tiny_qwen2_with_tensors", parts(json.dumps(qwen, indent=2), tensor_lines(qwen)))
        mistral = dict(TINY_CONFIG, architectures=["MistralForCausalLM"], model_type="mistral",
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
                       eos_token_id=[2, 3])
        put("config_fuzz", "tiny_mistral_with_tensors", parts(json.dumps(mistral, indent=2), tensor_lines(mistral)))

        # tokenizer_json_fuzz
        sd = os.path.join(work, "synth")
        run([synth, "--preset", "tiny", "--out", sd, "--layers", "1"])
        sl = os.path.join(work, "synth-llama")
        run([synth, "--preset", "tiny-llama", "--out", sl, "--layers", "1"])
        text = "Hello world! It's 2024, caf\u00e9 \u4f60\u597d\n\n  spaces<|endoftext|>"
        for name, d in [("qwen2_bytelevel", sd), ("llama3_bytelevel", sl)]:
            tok = pruned_synth_tokenizer(os.path.join(d, "tokenizer.json"), 60)
            tc = json.load(open(os.path.join(d, "tokenizer_config.json")))
            tc.pop("added_tokens_decoder", None)
            tc.pop("chat_template", None)
            cfg = {k: v for k, v in json.load(open(os.path.join(d, "config.json"))).items()
                   if k in ("bos_token_id", "eos_token_id")}
            put("tokenizer_json_fuzz", name, parts(compact(tok), text, compact(tc), compact(cfg)))
        abc = {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}
        put("tokenizer_json_fuzz", "merges_by_rank", parts(compact(bpe_json(abc, ["b c", "a b", "a bc"])), "abcab"))
        put("tokenizer_json_fuzz", "merges_as_pairs",
            parts(compact(bpe_json(abc, [["a", "b"], ["b", "c"], ["a", "bc"]], ignore_merges=True)), "bcab"))
        j = bpe_json(abc, ["a b"])
        j["added_tokens"] = [added(6, "<s>"), added(7, "[X]", special=False)]
        j["post_processor"] = template_bos("<s>", 6)
        put("tokenizer_json_fuzz", "added_tokens_template",
            parts(compact(j), "ab[X]c<s>abc", compact({"add_bos_token": True, "bos_token": {"content": "<s>"}})))
        j = bpe_json(abc, ["a b"])
        j["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}|\\p{L}+|\\s+"},
                              "behavior": "Isolated", "invert": False}
        j["normalizer"] = {"type": "NFC"}
        put("tokenizer_json_fuzz", "split_regex_nfc", parts(compact(j), "abc 123 cab\u0301"))
        put("tokenizer_json_fuzz", "sentencepiece_style", parts(compact(sentencepiece_style_bpe()), "hello world \U0001F600",
                                                                compact({"add_bos_token": True, "add_eos_token": False}),
                                                                compact({"bos_token_id": 1, "eos_token_id": 2})))
        put("tokenizer_json_fuzz", "metaspace", parts(compact(metaspace_bpe()), " hello  world"))
        j = bpe_json(abc, ["a b"])
        j["post_processor"] = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}]}
        put("tokenizer_json_fuzz", "roberta_processing", parts(compact(j), "abc"))

        # sentencepiece_fuzz
        put("sentencepiece_fuzz", "stories260K_tok512", rd(stories, "tokenizer.model"))

        # calibration_fuzz: byte 0 selects the name and options (calibration_fuzz.cpp)
        cal = os.path.join(ROOT, "testdata", "calibration")
        put("calibration_fuzz", "records_jsonl", bytes([0x01]) + rd(cal, "records.jsonl"))
        put("calibration_fuzz", "records_jsonl_tok_chunks", bytes([0x01 | 0x02 | 0x04 | 0x40 | 0x80]) + rd(cal, "records.jsonl"))
        put("calibration_fuzz", "records_jsonl_gz", bytes([0x01 | 0x10 | 0x40]) + rd(cal, "records.jsonl.gz"))
        put("calibration_fuzz", "paragraphs_txt", bytes([0x40 | 0x08]) + rd(cal, "paragraphs.txt"))
        put("calibration_fuzz", "paragraphs_txt_gz_chunks", bytes([0x40 | 0x02 | 0x04]) + gzip.compress(rd(cal, "paragraphs.txt"), mtime=0))
        put("calibration_fuzz", "input_ids_vocab", bytes([0x01 | 0x80 | 0x30]) + rd(calib))
        lines = open(os.path.join(stories, "calib.txt"), encoding="utf-8").read()[:1500]
        put("calibration_fuzz", "stories_txt_bom_crlf", bytes([0x40 | 0x20]) + b"\xef\xbb\xbf" + lines.replace("\n", "\r\n").encode())
        put("calibration_fuzz", "text_and_null_records", bytes([0x01 | 0x40]) + (
            compact({"text": "Once upon a time"}) + "\n  \n" + compact({"input_ids": None, "text": "a b c"}) + "\n" +
            compact({"input_ids": [1, 2, 3], "text": "ignored", "extra": {"k": [1.5, None]}}) + "\r\n").encode())
        two = gzip.compress(b'{"input_ids": [1, 5, 6, 7]}\n', mtime=0) + gzip.compress(b'{"text": "two members"}\n', mtime=0)
        put("calibration_fuzz", "gzip_two_members", bytes([0x01 | 0x40]) + two)

        # pipeline_fuzz
        pipes = ["stats,blockscale{rule=mse},pack", "stats,smoothquant{alpha=0.6},stats,blockscale{rule=weighted},pack",
                 "stats{second_moments=true},gptq{damp=0.01,act_order=true,block=128,scales=localhessian},pack",
                 "stats{second_moments=true},auto{holdout=25%,damp=0.01,smoothquant=true,alpha=0.5},blockscale{rule=max},pack",
                 "stats{second_moments=true},sensitivity{budget=5%,max_layers=3,metric=kl},outliers{k=8,top=4},blockscale{rule=localhessian},pack",
                 "stats,smoothquant{alpha=0.5,min_scale=1e-5,extra=on},stats,blockscale{rule=4over6},pack",
                 " stats , blockscale { rule = max } , pack ", "blockscale,pack", "stats,pack,stats",
                 "stats{second_moments=true},auto{alpha=0.3/0.5/0.7},blockscale,pack", "stats,auto{alpha=by-scheme},pack"]
        for n, p in enumerate(pipes):
            put("pipeline_fuzz", f"pipeline_{n}", p)

        # recipe_fuzz
        put("recipe_fuzz", "array_pipeline", json.dumps({"name": "mine", "description": "smoothed, mse scales", "scheme": "w4a4",
                                                        "pipeline": ["stats", "smoothquant{alpha=0.6}", "stats", "blockscale{rule=mse}", "pack"]}))
        put("recipe_fuzz", "string_pipeline", json.dumps({"name": "plain16", "scheme": "w4a16", "pipeline": "stats,blockscale,pack"}))
        put("recipe_fuzz", "mxfp4", json.dumps({"name": "mx", "scheme": "mxfp4", "pipeline": ["stats", "blockscale{rule=max}", "pack"]}))

        # stats_fuzz, manifest_fuzz
        for n, f in enumerate(sorted(os.listdir(cache))):
            put("stats_fuzz", f"cache_{n}", rd(cache, f))
        put("manifest_fuzz", "w4a16", rd(arts["w4a16"], "fp4c-manifest.json"))
        put("manifest_fuzz", "modelopt_w4a4", rd(arts["modelopt-w4a4"], "fp4c-manifest.json"))

        # the artifact readers
        for name in ["w4a16", "w4a4", "mxfp4a16", "mxfp4"]:
            put("compressed_tensors_reader_fuzz", name, parts(rd(arts[name], "config.json"), rd(arts[name], "model.safetensors")))
        for name in ["modelopt-w4a16", "modelopt-w4a4"]:
            a = arts[name]
            put("modelopt_reader_fuzz", name, parts(rd(a, "hf_quant_config.json"), rd(a, "model.safetensors"), rd(a, "config.json")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(CORPUS) for f in fs)
    print(f"make_seeds: {sum(len(fs) for _, _, fs in os.walk(CORPUS))} seeds, {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
