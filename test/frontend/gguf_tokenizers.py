#!/usr/bin/env python3
"""Writes the tokenizer-only GGUF files gguf_tokenizer_test reads and the token ids transformers gives
for them, so that the C++ test runs without Python:

  testdata/gguf/tokenizers/<name>.gguf   tokenizer.ggml.* metadata (and the few llama.* keys a config
                                         needs), no tensors; vocabularies trained here with the
                                         `tokenizers` library on testdata/tokenizers/corpus.txt
  testdata/gguf/tokenizers/<name>.ids    transformers' ids for every text of the corpus (each line
                                         alone, then runs of lines joined by varied line breaks, as
                                         gguf_tokenizer_test builds them): "count fnv1a64" per text,
                                         the hash over the ids as little-endian int32; the first
                                         kFullTexts texts also in full, for readable failures

  name        tokenizer.ggml.model / .pre   what it covers
  llama-bpe   gpt2 / llama-bpe      Llama 3's split (\\p{N}{1,3}), BOS added, control tokens
  qwen2       gpt2 / qwen2          single digits, no BOS, control and user-defined tokens
  smollm      gpt2 / smollm         digits one by one, then GPT-2's split (SmolLM2)
  gpt-2       gpt2 / gpt-2          GPT-2's split
  llama-spm   llama                 SentencePiece-style: tokens and scores only (merges from the
                                    scores), byte tokens, <unk>, BOS added

Without transformers' ids (the C++ test states what it expects):
  pre-<pre>.gguf    one byte-level vocabulary (the 256 byte tokens and a few merges) under each of the
                    pre-tokenizers default, gpt-2, smollm, llama-bpe and qwen2, so that
                    "Hi !! 12345 ab" splits differently under each (llama.cpp's regexes)
  bad-*.gguf        tokenizer metadata fp4c refuses: model 'bert', an unknown pre-tokenizer, a merge of
                    three tokens, token types of the wrong length, a BOS id outside the vocabulary, a
                    gpt2 tokenizer without merges

With --record NAME... it only records the ids again for testdata/gguf/tokenizers/NAME.gguf.
With --smollm2 FILE.gguf it also writes testdata/gguf/tokenizers/smollm2-135m.ids from the real
SmolLM2-135M-Instruct GGUF (the test uses it when that file has been fetched).

Rerun only to refresh:  /work/venv/tf/bin/python test/frontend/gguf_tokenizers.py [--smollm2 FILE]
(needs transformers, tokenizers, gguf, numpy).
"""
import json
import os
import struct
import sys

import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "testdata", "gguf", "tokenizers")
CORPUS = os.path.join(ROOT, "testdata", "tokenizers", "corpus.txt")
kFullTexts = 40

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def corpus_texts():
    """The texts gguf_tokenizer_test encodes (corpus_texts() there): each line, then runs of 2 to 6
    consecutive lines joined by varied line breaks."""
    with open(CORPUS, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts = [l.decode("utf-8") for l in lines]
    n_lines = len(texts)
    breaks = ["\n", "\n\n", "\r\n", "\n  \n", " \n\t", "\n\n\n"]
    i, k = 0, 0
    while i + 6 < n_lines:
        n = 2 + k % 5
        block = ""
        for j in range(n):
            block += (breaks[(k + j) % 6] if j else "") + texts[i + j]
        texts.append(block)
        i += 7
        k += 1
    return texts


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for b in struct.pack(f"<{len(ids)}i", *ids):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def train_byte_level(texts, pre, specials, vocab_size=1400):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre in ("gpt-2", "smollm"))
    if pre == "llama-bpe":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), byte_level])
    elif pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"), byte_level])
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    return tokens, merges


def train_spm(texts, vocab_size=1400):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials + byte_tokens,
                                  limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    # SentencePiece's scores: the pieces in merge order, best first; specials and bytes 0.
    scores = [0.0 if i < len(specials) + 256 else -float(i) for i in range(len(tokens))]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * (len(tokens) - 259)
    return tokens, scores, types


def write_gguf(path, model, pre, tokens, types, merges=None, scores=None, bos=None, eos=None, unk=None,
               pad=None, add_bos=None, add_eos=None, add_space_prefix=None):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(os.path.splitext(os.path.basename(path))[0])
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if unk is not None:
        w.add_unk_token_id(unk)
    if pad is not None:
        w.add_pad_token_id(pad)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if add_eos is not None:
        w.add_add_eos_token(add_eos)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# llama.cpp's pre-tokenizers that split every digit off first (\\p{N}, then GPT-2's regex), as the models' own
# tokenizer.json files do with Digits(individual_digits=True) + ByteLevel (SmolLM2, StarCoder).
DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}


def reference_tokenizer(gguf_path):
    """transformers' tokenizer for the GGUF, and a note on what was changed. For the digit-splitting
    pre-tokenizers transformers 5 falls back to GPT-2's split alone, which keeps a space with a non-ASCII
    numeral (" \u216b", " \u2460") and a run of spaces before digits together where the model's own
    tokenizer.json and llama.cpp split the digits off first; there the reference is that tokenizer with the
    model's pre-tokenizer put back, and every text on which transformers' GGUF loader differs is checked to
    hold a numeral."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    load = lambda: AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    tok = load()
    pre = gguf.GGUFReader(gguf_path).fields.get("tokenizer.ggml.pre")
    pre = pre.contents() if pre is not None else None
    if pre not in DIGIT_SPLIT_PRE:
        return tok, None, ""
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    return tok, load(), " with the pre-tokenizer Digits(individual_digits) + ByteLevel (the model's tokenizer.json)"


def record_ids(gguf_path, out_path, texts):
    import unicodedata
    import transformers
    tok, as_loaded, note = reference_tokenizer(gguf_path)
    differ = 0
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(f"# transformers {transformers.__version__}: AutoTokenizer.from_pretrained(dir, gguf_file="
                f"'{os.path.basename(gguf_path)}'){note}(text).input_ids; {len(texts)} texts; count fnv1a64 [ids]\n")
        tokens = 0
        for i, t in enumerate(texts):
            ids = tok(t)["input_ids"]
            tokens += len(ids)
            if as_loaded is not None and as_loaded(t)["input_ids"] != ids:
                differ += 1
                assert any(unicodedata.category(c)[0] == "N" for c in t), \
                    f"text {i} differs from transformers' GGUF loader without a numeral: {t!r}"
            line = f"{len(ids)} {fnv1a64(ids):016x}"
            if i < kFullTexts:
                line += " " + json.dumps(ids, separators=(",", ":"))
            f.write(line + "\n")
    print(f"{out_path}: {len(texts)} texts, {tokens} tokens" +
          (f"; {differ} texts (each with a numeral) differ from transformers' GGUF loader as it is"
           if as_loaded is not None else ""))


def byte_alphabet():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    spell = dict(zip(bs, cs))
    return [chr(spell[b]) for b in range(256)]


def write_small_cases():
    alphabet = byte_alphabet()
    merges = ["H i", "\u0120 !", "! !", "\u0120 1", "3 4", "1 2", "12 3", "4 5"]
    tokens = alphabet + ["Hi", "\u0120!", "!!", "\u01201", "34", "12", "123", "45", "\u0120ab"]
    types = [NORMAL] * len(tokens)
    for pre in ["default", "gpt-2", "smollm", "llama-bpe", "qwen2"]:
        write_gguf(os.path.join(OUT, f"pre-{pre}.gguf"), model="gpt2", pre=pre, tokens=tokens, merges=merges,
                   types=types, add_bos=False)
    small = dict(model="gpt2", pre="gpt-2", tokens=["a", "b", "ab"], merges=["a b"], types=[NORMAL] * 3)
    write_gguf(os.path.join(OUT, "bad-model.gguf"), **dict(small, model="bert"))
    write_gguf(os.path.join(OUT, "bad-pre.gguf"), **dict(small, pre="no-such-pre"))
    write_gguf(os.path.join(OUT, "bad-merge.gguf"), **dict(small, merges=["a b", "a b ab"]))
    write_gguf(os.path.join(OUT, "bad-types.gguf"), **dict(small, types=[NORMAL] * 2))
    write_gguf(os.path.join(OUT, "bad-bos.gguf"), **dict(small, bos=7))
    write_gguf(os.path.join(OUT, "bad-no-merges.gguf"), **dict(small, merges=None))


def main(argv):
    texts = corpus_texts()
    lines = texts[:2000]  # training text: the first 2000 lines
    os.makedirs(OUT, exist_ok=True)
    if "--record" in argv:  # ids again for files already written
        for name in argv[argv.index("--record") + 1:]:
            record_ids(os.path.join(OUT, name + ".gguf"), os.path.join(OUT, name + ".ids"), texts)
        return
    if "--smollm2" in argv:
        record_ids(argv[argv.index("--smollm2") + 1], os.path.join(OUT, "smollm2-135m.ids"), texts)
        return

    write_small_cases()
    if "--small" in argv:
        return
    cases = []
    # Llama 3 style: BOS added, control tokens.
    # Its vocabulary also has <|endoftext|>: without it transformers (GPT2Tokenizer's default special tokens)
    # appends one after the last id, which the corpus holds and fp4c does not make up.
    sp = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>"]
    tokens, merges = train_byte_level(lines, "llama-bpe", sp)
    cases.append(("llama-bpe", dict(model="gpt2", pre="llama-bpe", tokens=tokens, merges=merges,
                                    types=[CONTROL] * 4 + [NORMAL] * (len(tokens) - 4), bos=0, eos=1,
                                    add_bos=True)))
    # Qwen2 style: no BOS, a user-defined token.
    sp = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]
    tokens, merges = train_byte_level(lines, "qwen2", sp)
    cases.append(("qwen2", dict(model="gpt2", pre="qwen2", tokens=tokens, merges=merges,
                                types=[CONTROL] * 3 + [USER_DEFINED] + [NORMAL] * (len(tokens) - 4), bos=0, eos=2,
                                pad=0, add_bos=False)))
    # SmolLM2 style.
    sp = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens, merges = train_byte_level(lines, "smollm", sp)
    cases.append(("smollm", dict(model="gpt2", pre="smollm", tokens=tokens, merges=merges,
                                 types=[CONTROL] * 3 + [NORMAL] * (len(tokens) - 3), bos=1, eos=2, unk=0,
                                 add_bos=False, add_space_prefix=False)))
    # GPT-2.
    sp = ["<|endoftext|>"]
    tokens, merges = train_byte_level(lines, "gpt-2", sp)
    cases.append(("gpt-2", dict(model="gpt2", pre="gpt-2", tokens=tokens, merges=merges,
                                types=[CONTROL] + [NORMAL] * (len(tokens) - 1), bos=0, eos=0)))
    # SentencePiece-style (Llama 2): tokens and scores, no merges.
    tokens, scores, types = train_spm(lines)
    cases.append(("llama-spm", dict(model="llama", pre=None, tokens=tokens, scores=scores, types=types, bos=1,
                                    eos=2, unk=0, add_bos=True, add_eos=False)))

    for name, kw in cases:
        path = os.path.join(OUT, name + ".gguf")
        write_gguf(path, **kw)
        record_ids(path, os.path.join(OUT, name + ".ids"), texts)


if __name__ == "__main__":
    main(sys.argv[1:])
