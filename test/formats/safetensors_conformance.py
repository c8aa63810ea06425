#!/usr/bin/env python3
"""Conformance of fp4c's safetensors code with the official `safetensors` library.

Driven by safetensors_conformance_test.cpp:
  check-written DESC.json     files fp4c wrote: the official library reads dtype, shape, bytes, metadata
  write-official DIR          the official library writes files (and HF writes an index) for fp4c to read;
                              prints nothing, writes DIR/expected.json describing them
  check-rejected FILE...      the official library rejects every one of these files
Exit status 0 on success; failures are printed one per line.
"""
import json
import os
import struct
import sys

import numpy as np
import safetensors
import safetensors.numpy

# safetensors dtype -> numpy dtype, where numpy has one (BF16 and F8_E4M3 it lacks).
NUMPY_DTYPES = {"F16": np.float16, "F32": np.float32, "U8": np.uint8, "I32": np.int32, "I64": np.int64}


def deserialize(data):
    """{name: (dtype, shape, bytes)} by the official parser, for every dtype."""
    if not hasattr(safetensors, "deserialize"):
        raise SystemExit(f"safetensors {safetensors.__version__} has no deserialize(); need a newer one")
    return {name: (t["dtype"], list(t["shape"]), bytes(t["data"])) for name, t in safetensors.deserialize(data)}


def check_written(desc_path):
    failures = []
    desc = json.load(open(desc_path))
    for f in desc["files"]:
        path = f["path"]
        data = open(path, "rb").read()
        (n,) = struct.unpack("<Q", data[:8])
        if n % 8:
            failures.append(f"{path}: header length {n} is not a multiple of 8")
        got = deserialize(data)
        want = {t["name"]: (t["dtype"], t["shape"], bytes.fromhex(t["hex"])) for t in f["tensors"]}
        if set(got) != set(want):
            failures.append(f"{path}: tensors {sorted(got)} != expected {sorted(want)}")
        for name in sorted(set(got) & set(want)):
            if got[name] != want[name]:
                g, w = got[name], want[name]
                failures.append(f"{path}: tensor {name!r}: got ({g[0]}, {g[1]}, {len(g[2])} bytes), "
                                f"expected ({w[0]}, {w[1]}, {len(w[2])} bytes){' bytes differ' if g[:2] == w[:2] else ''}")
        with safetensors.safe_open(path, framework="numpy") as st:
            if set(st.keys()) != set(want):
                failures.append(f"{path}: safe_open keys {sorted(st.keys())} != {sorted(want)}")
            meta = st.metadata() or {}
            if meta != f["metadata"]:
                failures.append(f"{path}: metadata {meta} != {f['metadata']}")
            for name, (dtype, shape, raw) in want.items():
                if dtype not in NUMPY_DTYPES:
                    continue
                a = st.get_tensor(name)
                if a.dtype != NUMPY_DTYPES[dtype] or list(a.shape) != shape or a.astype(a.dtype.newbyteorder("<")).tobytes() != raw:
                    failures.append(f"{path}: safe_open tensor {name!r}: {a.dtype} {list(a.shape)} differs")
    return failures


def write_official(out_dir):
    rng = np.random.default_rng(1234)
    shapes = [[], [0], [1], [5], [3, 4], [2, 0, 3], [2, 3, 5]]
    files = []

    def random_array(np_dtype, shape):
        raw = rng.integers(0, 256, size=int(np.prod(shape, dtype=np.int64)) * np.dtype(np_dtype).itemsize, dtype=np.uint8)
        return np.frombuffer(raw.tobytes(), dtype=np.dtype(np_dtype).newbyteorder("<")).reshape(shape)

    def save(name, tensors, metadata):
        path = os.path.join(out_dir, name)
        safetensors.numpy.save_file(tensors, path, metadata=metadata)
        files.append({"path": path, "metadata": metadata or {},
                      "tensors": [{"name": k, "dtype": next(d for d, t in NUMPY_DTYPES.items() if v.dtype == t),
                                   "shape": list(v.shape), "hex": v.tobytes().hex()} for k, v in tensors.items()]})

    tensors = {}
    for dtype, np_dtype in NUMPY_DTYPES.items():
        for i, shape in enumerate(shapes):
            tensors[f"{dtype.lower()}.{i}"] = random_array(np_dtype, shape)
    save("official_all.safetensors", tensors, {"format": "np", "note": "written by safetensors " + safetensors.__version__})
    save("official_empty.safetensors", {}, None)
    save("official_meta_only.safetensors", {}, {"k": "v"})

    # A sharded checkpoint as transformers saves one: shards by the official library, index by json.dumps.
    ckpt = os.path.join(out_dir, "sharded")
    os.makedirs(ckpt, exist_ok=True)
    weight_map, total = {}, 0
    shards = {"model-00001-of-00002.safetensors": ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"],
              "model-00002-of-00002.safetensors": ["lm_head.weight", "model.norm.weight", "model.layers.0.mlp.ñ"]}
    for shard, names in shards.items():
        ts = {n: random_array(np.float16, [4, 3]) for n in names}
        safetensors.numpy.save_file(ts, os.path.join(ckpt, shard), metadata={"format": "pt"})
        for n, v in ts.items():
            weight_map[n] = shard
            total += v.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(ckpt, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")  # transformers' save_pretrained

    json.dump({"files": files, "sharded": {"dir": ckpt, "total_size": total, "weight_map": weight_map}},
              open(os.path.join(out_dir, "expected.json"), "w"), indent=1)
    return []


def check_rejected(paths):
    failures = []
    for path in paths:
        try:
            deserialize(open(path, "rb").read())
            failures.append(f"{path}: the official library accepts it")
        except safetensors.SafetensorError:
            pass
    return failures


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    print(f"safetensors {safetensors.__version__}, numpy {np.__version__}", file=sys.stderr)
    failures = {"check-written": lambda: check_written(args[0]),
                "write-official": lambda: write_official(args[0]),
                "check-rejected": lambda: check_rejected(args)}[cmd]()
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
