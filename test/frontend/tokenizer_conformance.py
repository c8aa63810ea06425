#!/usr/bin/env python3
"""Reference side of tokenizer_conformance_test: token ids from the `tokenizers` and `sentencepiece`
libraries, and tokenizer.json files of the SentencePiece-style BPE kind (Llama 2, Mistral) trained
with `tokenizers` itself.

  encode-hf FILE INPUTS OUT             tokenizers.Tokenizer.from_file(FILE).encode(text).ids
  encode-sp FILE INPUTS OUT [--add-bos] [--add-eos]  (flags anywhere)
                                        SentencePieceProcessor(model_file=FILE).encode(text),
                                        with the model's BOS/EOS around it as LlamaTokenizer adds them
  train-sp-bpe CORPUS DIR VARIANT       writes DIR/tokenizer.json and DIR/tokenizer_config.json;
                                        VARIANT: legacy (Prepend + Replace normalizers, no
                                        pre-tokenizer, byte fallback), metaspace (Metaspace
                                        pre-tokenizer, prepend_scheme first, byte fallback) or
                                        unk (no byte fallback: unknown characters fuse into <unk>)

  nfc-cases INPUTS EXPECTED              every assigned code point alone, after 'a', and followed
                                        by combining marks or a Hangul vowel; and Python's
                                        unicodedata.normalize("NFC", ...) of each

INPUTS holds one JSON string per line; OUT gets one JSON list of ids per line. Encoding time goes
to stdout as `seconds=... tokens=...`.
"""
import json
import sys
import time


def read_inputs(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        return [json.loads(line) for line in f.read().split("\n") if line]


def write_ids(path, all_ids):
    with open(path, "w", encoding="utf-8") as f:
        for ids in all_ids:
            f.write(json.dumps(ids) + "\n")


def encode_hf(file, inputs, out):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(file)
    texts = read_inputs(inputs)
    t0 = time.perf_counter()
    all_ids = [tok.encode(t).ids for t in texts]
    dt = time.perf_counter() - t0
    write_ids(out, all_ids)
    print(f"seconds={dt:.6f} tokens={sum(map(len, all_ids))}")


def encode_sp(file, inputs, out, flags):
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=file)
    bos = sp.bos_id() if "--add-bos" in flags else None
    eos = sp.eos_id() if "--add-eos" in flags else None
    texts = read_inputs(inputs)
    t0 = time.perf_counter()
    all_ids = []
    for t in texts:
        ids = sp.encode(t)
        all_ids.append(([bos] if bos is not None else []) + ids + ([eos] if eos is not None else []))
    dt = time.perf_counter() - t0
    write_ids(out, all_ids)
    print(f"seconds={dt:.6f} tokens={sum(map(len, all_ids))}")


def train_sp_bpe(corpus, out_dir, variant):
    import os
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)] if variant != "unk" else []
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=variant != "unk"))
    # Trained on words (split at the metaspace), as SentencePiece trains; encoding then runs on
    # whole lines for the legacy variant, as Llama 2's tokenizer.json does.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials + byte_tokens,
                                  limit_alphabet=120, show_progress=False)
    with open(corpus, encoding="utf-8", newline="\n") as f:
        lines = [line for line in f.read().split("\n") if line]
    tok.train_from_iterator(lines, trainer)
    if variant == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        tok.pre_tokenizer = None
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    else:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                     split=variant == "unk")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}, f, indent=2)


def nfc_cases(inputs, expected):
    import unicodedata
    cases = []
    for cp in range(0x110000):
        c = chr(cp)
        if 0xD800 <= cp < 0xE000 or unicodedata.category(c) in ("Cn", "Co"):
            continue
        cases += [c, "a" + c, c + "\u0323\u0301", c + "\u0301\u0323" + c, c + "\u1161\u11a8"]
    with open(inputs, "w", encoding="utf-8") as fi, open(expected, "w", encoding="utf-8") as fe:
        for c in cases:
            fi.write(json.dumps(c) + "\n")
            fe.write(json.dumps(unicodedata.normalize("NFC", c)) + "\n")
    print(f"cases={len(cases)} unicode={unicodedata.unidata_version}")


def main(argv):
    flags = [a for a in argv if a.startswith("--")]
    argv = [a for a in argv if not a.startswith("--")]
    if len(argv) == 4 and argv[0] == "encode-hf":
        encode_hf(argv[1], argv[2], argv[3])
    elif len(argv) == 4 and argv[0] == "encode-sp":
        encode_sp(argv[1], argv[2], argv[3], flags)
    elif len(argv) == 3 and argv[0] == "nfc-cases":
        nfc_cases(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "train-sp-bpe":
        train_sp_bpe(argv[1], argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
