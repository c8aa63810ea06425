#!/usr/bin/env python3
"""A GGUF source gives a normal Hugging Face artifact: transformers loads the tokenizer fp4c wrote
(tokenizer.json, tokenizer_config.json, made from the GGUF's tokenizer.ggml.* metadata) and it gives the
same token ids as the tokenizer transformers builds from the GGUF itself (for the digit-splitting
pre-tokenizers, smollm and its kin, with the model's own pre-tokenizer put back: transformers 5 gives them
GPT-2's split alone, README "GGUF input"); config.json (with its
quantization_config) and generation_config.json load too.

    gguf_artifact_conformance.py --fp4c BUILD/fp4c --work DIR [--gguf FILE.gguf ...]

For each tokenizer of testdata/gguf/tokenizers (llama-bpe, qwen2, smollm, gpt-2: byte-level BPE;
llama-spm: SentencePiece-style) it writes a tiny llama GGUF with random weights around that tokenizer's
metadata; each --gguf (the real SmolLM2-135M-Instruct, in `make conformance`) is taken as it is. Each goes
through `fp4c quantize --scheme w4a16`, and every text of testdata/tokenizers/corpus.txt (lines, and runs of
lines joined by varied line breaks) is encoded by both tokenizers. Exit status 1 on any difference.
Needs transformers, tokenizers, gguf, numpy (not torch, which transformers imports when present).
"""
import argparse
import json
import os
import subprocess
import sys
import unicodedata

import numpy as np
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZERS = ["llama-bpe", "qwen2", "smollm", "gpt-2", "llama-spm"]
DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}


def corpus_texts():
    with open(os.path.join(ROOT, "testdata", "tokenizers", "corpus.txt"), "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts = [l.decode("utf-8") for l in lines]
    n = len(texts)
    breaks = ["\n", "\n\n", "\r\n", "\n  \n", " \n\t", "\n\n\n"]
    i = k = 0
    while i + 6 < n:
        texts.append("".join((breaks[(k + j) % 6] if j else "") + texts[i + j] for j in range(2 + k % 5)))
        i += 7
        k += 1
    return texts


def tiny_llama_gguf(tokenizer_gguf, out):
    """A one-layer llama GGUF (hidden 64) with the tokenizer metadata of `tokenizer_gguf`."""
    r = gguf.GGUFReader(tokenizer_gguf)
    w = gguf.GGUFWriter(out, "llama")
    vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    for key, field in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(key, field.contents())
        else:
            w.add_key_value(key, field.contents(), vtype)
    rng = np.random.default_rng(0)
    t = lambda *s: (rng.standard_normal(s) * 0.05).astype(np.float32)
    w.add_tensor("token_embd.weight", t(vocab, 64))
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(64, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(64, np.float32))
    for name, shape in [("attn_q", (64, 64)), ("attn_k", (32, 64)), ("attn_v", (32, 64)), ("attn_output", (64, 64)),
                        ("ffn_gate", (128, 64)), ("ffn_up", (128, 64)), ("ffn_down", (64, 128))]:
        w.add_tensor(f"blk.0.{name}.weight", t(*shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check(fp4c, gguf_path, work, texts):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    name = os.path.splitext(os.path.basename(gguf_path))[0]
    artifact = os.path.join(work, name + "-w4a16")
    subprocess.run([fp4c, "quantize", "--model", gguf_path, "--scheme", "w4a16", "--out", artifact, "--force"],
                   check=True, stdout=subprocess.DEVNULL)
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        if not os.path.exists(os.path.join(artifact, f)):
            print(f"{name}: the artifact has no {f}")
            return False
    config = AutoConfig.from_pretrained(artifact)
    if getattr(config, "quantization_config", None) is None:
        print(f"{name}: config.json has no quantization_config")
        return False
    GenerationConfig.from_pretrained(artifact)
    ours = AutoTokenizer.from_pretrained(artifact)
    load = lambda: AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    ref = load()
    pre = gguf.GGUFReader(gguf_path).fields.get("tokenizer.ggml.pre")
    as_loaded = None
    if pre is not None and pre.contents() in DIGIT_SPLIT_PRE:
        # transformers 5 gives these GPT-2's split alone; the model's tokenizer.json (and llama.cpp) split
        # digits off first. The reference gets that pre-tokenizer back; the texts where transformers' GGUF
        # loader as it is differs must each hold a numeral.
        from tokenizers import pre_tokenizers
        ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True),
             pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
        as_loaded = load()
    bad = 0
    tokens = 0
    loader_differs = 0
    for i, text in enumerate(texts):
        a, b = ours(text)["input_ids"], ref(text)["input_ids"]
        tokens += len(a)
        if as_loaded is not None and as_loaded(text)["input_ids"] != b:
            loader_differs += 1
            if not any(unicodedata.category(c)[0] == "N" for c in text):
                bad += 1
                print(f"{name}: text {i} {json.dumps(text)[:120]}: transformers' GGUF loader differs without a numeral")
        if a != b:
            bad += 1
            if bad <= 3:
                print(f"{name}: text {i} {json.dumps(text)[:120]}\n  artifact: {a[:30]}\n  GGUF:     {b[:30]}")
    same_specials = (ours.bos_token, ours.eos_token) == (ref.bos_token, ref.eos_token)
    if as_loaded is not None:
        print(f"{name}: reference: the GGUF's tokenizer with the pre-tokenizer Digits + ByteLevel put back; "
              f"{loader_differs} texts (each with a numeral) differ from transformers' GGUF loader as it is")
    print(f"{name}: {len(texts)} texts, {tokens} tokens, {bad} differ; BOS/EOS {ours.bos_token!r}/{ours.eos_token!r} "
          f"({'the same' if same_specials else 'GGUF: %r/%r' % (ref.bos_token, ref.eos_token)})")
    return bad == 0 and same_specials


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp4c", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gguf", action="append", default=[])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    texts = corpus_texts()
    ok = True
    for t in TOKENIZERS:
        path = os.path.join(a.work, f"tiny-{t}.gguf")
        tiny_llama_gguf(os.path.join(ROOT, "testdata", "gguf", "tokenizers", t + ".gguf"), path)
        ok &= check(a.fp4c, path, a.work, texts)
    for g in a.gguf:
        ok &= check(a.fp4c, g, a.work, texts)
    print("gguf artifact conformance:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
