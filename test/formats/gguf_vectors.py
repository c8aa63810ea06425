#!/usr/bin/env python3
"""Writes testdata/gguf/dequant.gguf: random blocks of every block format fp4c dequantizes, each beside
its float32 dequantization by the PyPI `gguf` package's numpy dequantizers (gguf.quants), which
agree bit for bit with ggml-quants.c's dequantize_row_*; and metadata of every value type. gguf_test
checks fp4c's reader and dequantizers against it without Python. Rerun only to refresh it:

  /work/venv/tf/bin/python test/formats/gguf_vectors.py   (needs gguf, numpy)
"""
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "testdata", "gguf", "dequant.gguf")

# Byte offsets of the f16 scale fields in each block (kept finite: a NaN scale's payload is the
# hardware's business, not the format's).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(rng, qtype, rows, cols):
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        h = raw[..., off:off + 2].copy().view(np.uint16)
        inf_nan = (h & 0x7C00) == 0x7C00
        h[inf_nan] &= np.uint16(0xBFFF)   # exponent 31 -> 15: finite
        raw[..., off:off + 2] = h.view(np.uint8)
    # A few blocks with the extremes: zero scales, the largest finite scale, subnormal scales.
    for b, val in enumerate([0x0000, 0x7BFF, 0x0001, 0x8400]):
        if b < raw.shape[1]:
            for off in F16_FIELDS[qtype]:
                raw[0, b, off:off + 2] = np.array([val], dtype=np.uint16).view(np.uint8)
    return raw.reshape(rows, -1)


def main():
    rng = np.random.default_rng(20240516)
    w = gguf.GGUFWriter(OUT, "llama")
    # Metadata of every value type, arrays of each and nested arrays.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ▁world")
    w.add_key_value("test.array_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT8)
    w.add_key_value("test.array_i32", [-1, 0, 7], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
    w.add_key_value("test.array_f32", [0.5, -2.25], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
    w.add_key_value("test.array_bool", [True, False], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.BOOL)
    w.add_array("test.array_string", ["a", "", "ü"])
    w.add_array("test.array_nested", [["x", "y"], ["z"]])

    types = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
    for qtype in types:
        block, _ = GGML_QUANT_SIZES[qtype]
        rows, cols = (3, 512) if block == 256 else (4, 256)
        raw = random_blocks(rng, qtype, rows, cols)
        expected = gguf.quants.dequantize(raw, qtype)
        assert expected.dtype == np.float32 and expected.shape == (rows, cols)
        w.add_tensor(qtype.name, raw, raw_shape=raw.shape, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", expected)
    # F16 (every finite pattern class: normals, subnormals, zeros, infinities) and BF16 (all bits).
    h = rng.integers(0, 1 << 16, size=(2, 384), dtype=np.uint16)
    h[(h & 0x7C00) == 0x7C00] &= np.uint16(0xFC00)   # NaN -> Inf; keeps the infinities
    w.add_tensor("F16", h.view(np.float16))
    w.add_tensor("F16.expected", h.view(np.float16).astype(np.float32))
    b = rng.integers(0, 1 << 16, size=(2, 384), dtype=np.uint16)
    w.add_tensor("BF16", b.view(np.uint8), raw_dtype=T.BF16)
    w.add_tensor("BF16.expected", gguf.quants.dequantize(b.view(np.uint8), T.BF16))
    # A 3-D F32 tensor: shapes are reversed ne.
    w.add_tensor("F32.3d", np.arange(24, dtype=np.float32).reshape(2, 3, 4))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
