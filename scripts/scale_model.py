#!/usr/bin/env python3
"""The paper model of docs/SCALE.md: per decoder layer, bytes read, FLOPs, the statistics volume of each
reduction and memory per rank, for a model spread over N ranks (one per node) by fp4c's data-parallel
calibration (passes/stats_collect.cpp: 64 calibration blocks at most, folded over a fixed binary tree;
each rank sends rank 0 the tree nodes inside its run of blocks, rank 0 broadcasts the finished statistics).

    scale_model.py                      # the tables of docs/SCALE.md
    scale_model.py --predict-bytes CONFIG SAMPLES NP [--second-moments]
        # what each rank should report as sent/received for one statistics collection of the model
        # in CONFIG (a config.json), for checking the measured volume against the model
"""
import argparse, json, math

MAX_BLOCKS = 64


def tree_levels(blocks):
    l = 0
    while (1 << l) < blocks:
        l += 1
    return l


def rank_nodes(blocks, first, last):
    """The tree nodes a rank with blocks [first, last) sends (as push_block folds them)."""
    top = tree_levels(blocks)
    stack = []
    for b in range(first, last):
        stack.append([0, b])
        while True:
            t = stack[-1]
            if len(stack) >= 2:
                l = stack[-2]
                if l[0] == t[0] and l[1] % 2 == 0 and l[1] + 1 == t[1]:
                    stack.pop()
                    stack[-1] = [l[0] + 1, l[1] // 2]
                    continue
            if t[0] < top and t[1] % 2 == 0 and ((t[1] + 1) << t[0]) >= blocks:
                stack[-1] = [t[0] + 1, t[1] // 2]
                continue
            break
    return len(stack)


def site_bytes(cols, m2, partial=True):
    # put_sites: per site 4+4+8+8+1 bytes of header, absmax/min/max as f32, mean square f64,
    # then the upper triangle of X^T X in f64.
    b = 25 + cols * (3 * 4 + 8)
    if m2:
        b += cols * (cols + 1) // 2 * 8
    return b


def layer_sites(c):
    hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    return [c["hidden_size"], c["num_attention_heads"] * hd, c["hidden_size"], c["intermediate_size"]]


def linears(c):
    """(name, rows, cols) of a dense layer's Linears, in checkpoint (name) order."""
    H, I = c["hidden_size"], c["intermediate_size"]
    hd = c.get("head_dim") or H // c["num_attention_heads"]
    dq, dkv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    return [("mlp.down_proj", H, I), ("mlp.gate_proj", I, H), ("mlp.up_proj", I, H), ("self_attn.k_proj", dkv, H),
            ("self_attn.o_proj", H, dq), ("self_attn.q_proj", dq, H), ("self_attn.v_proj", dkv, H)]


def pack_bytes(c, ranks, quantizer="gptq"):
    """Bytes each rank sends rank 0 in pack per layer (pipeline/distributed.cpp): its share of the
    Linears quantized by something other than the max rule, largest first to the least loaded rank."""
    items = [(rows * cols * cols, rows, cols) for _, rows, cols in linears(c)]
    items.sort(key=lambda x: -x[0])   # stable: equal costs keep name order, as std::stable_sort
    load = [0.0] * ranks
    sent = [0] * ranks
    for cost, rows, cols in items:
        r = min(range(ranks), key=lambda q: (load[q], q))
        load[r] += cost
        sent[r] += 8 + 8 + len(quantizer) + 16 + 4 + 1 + 8 + rows * cols // 2 + 8 + rows * cols // 16 + 32
    return sent


def predict(config, samples, ranks, m2, collections=1, gptq=False):
    """Bytes sent and received per rank for `collections` statistics collections over all layers and
    one pack (its empty broadcast, and with gptq each layer's quantized Linears)."""
    c = json.load(open(config))
    layers = c["num_hidden_layers"]
    sites = layer_sites(c)
    stats = 4 + sum(site_bytes(x, m2) for x in sites)   # one node's sites (u32 count + sites)
    blocks = min(samples, MAX_BLOCKS)
    out = []
    for r in range(ranks):
        first, last = blocks * r // ranks, blocks * (r + 1) // ranks
        nodes = rank_nodes(blocks, first, last) if r else 0
        gather = 4 + nodes * (4 + 8 + stats)
        bcast = 8 + stats
        # Per collection: an 8-byte broadcast (rank 0's cache hit or none); pack: one (the layers a
        # checkpoint holds), then per layer a gather (8-byte size + records) when something is spread.
        pk = pack_bytes(c, ranks) if gptq else [0] * ranks
        if r == 0:
            sent = ((ranks - 1) * bcast * layers + 8 * (ranks - 1)) * collections + 8 * (ranks - 1)
            recv = (sum(8 + 4 + rank_nodes(blocks, blocks * q // ranks, blocks * (q + 1) // ranks) * (12 + stats)
                        for q in range(1, ranks)) * layers) * collections
            recv += sum(8 + pk[q] for q in range(1, ranks)) * layers if gptq else 0
        else:
            sent = (8 + gather) * layers * collections + ((8 + pk[r]) * layers if gptq else 0)
            recv = (bcast * layers + 8) * collections + 8
        out.append((r, sent, recv))
    return out


MODELS = {
    # Llama-3-70B: 80 dense layers.
    "70B dense (Llama-3-70B)": dict(hidden=8192, inter=28672, layers=80, heads=64, kv=8, hd=128, experts=0),
    # DeepSeek-V3: 61 layers (3 dense, 58 MoE with 256 routed + 1 shared expert of 2048), MLA attention.
    "671B MoE (DeepSeek-V3)": dict(hidden=7168, inter=2048, layers=61, dense_layers=3, dense_inter=18432,
                                   heads=128, experts=256, shared=1, active=8, q_lora=1536, kv_lora=512,
                                   nope=128, rope=64, v=128),
}


def per_layer(m):
    """(parameters, statistics channels per site, second-moment entries, FLOPs per token)."""
    H = m["hidden"]
    if m["experts"]:
        attn = (H * m["q_lora"] + m["q_lora"] * m["heads"] * (m["nope"] + m["rope"]) +
                H * (m["kv_lora"] + m["rope"]) + m["kv_lora"] * m["heads"] * (m["nope"] + m["v"]) +
                m["heads"] * m["v"] * H)
        experts = m["experts"] + m["shared"]
        mlp = experts * 3 * H * m["inter"]
        active = (m["active"] + m["shared"]) * 3 * H * m["inter"]
        # Sites: the attention inputs (H, q_lora, kv_lora, heads*v), each expert's gate input (H, routed
        # tokens only) and down input (inter).
        sites = [H, m["q_lora"], m["kv_lora"], m["heads"] * m["v"]] + [H, m["inter"]] * experts
        flops_tok = 2 * (attn + active)
    else:
        attn = H * m["heads"] * m["hd"] * 2 + H * m["kv"] * m["hd"] * 2
        mlp = 3 * H * m["inter"]
        sites = [H, m["heads"] * m["hd"], H, m["inter"]]
        flops_tok = 2 * (attn + mlp)
    return attn + mlp, sites, flops_tok


def tables(tokens, nodes):
    lines = []
    for name, m in MODELS.items():
        params, sites, flops_tok = per_layer(m)
        chan = sum(sites) * 20
        m2 = sum(c * (c + 1) // 2 * 8 for c in sites)
        lines.append(f"### {name}\n")
        lines.append(f"- per layer: {params/1e9:.2f} B parameters, {params*2/1e9:.1f} GB of BF16 read by every rank "
                     f"that runs the layer's forward; forward {flops_tok*tokens/1e15:.2f} PFLOP over {tokens/1e6:.2f} M "
                     f"calibration tokens; X^T X {sum(c*c for c in sites)*tokens/1e15:.1f} P multiply-adds (float64, "
                     f"all sites, every token; MoE: routed tokens only, so about "
                     f"{(m.get('active',1)+m.get('shared',0))/(m.get('experts',0)+m.get('shared',0) or 1):.3f} of that)")
        lines.append(f"- one partial: {chan/1e6:.2f} MB of per-channel statistics, {m2/1e9:.2f} GB of second moments "
                     f"(upper triangles)\n")
        lines.append("| nodes | blocks per rank | nodes sent per rank | into rank 0 per layer (channels / + second moments) "
                     "| broadcast per layer | hidden states per rank | weights in memory per rank |")
        lines.append("|---|---|---|---|---|---|---|")
        for n in nodes:
            blocks = MAX_BLOCKS
            sent = max(rank_nodes(blocks, blocks * r // n, blocks * (r + 1) // n) for r in range(1, n))
            into0 = sum(rank_nodes(blocks, blocks * r // n, blocks * (r + 1) // n) for r in range(1, n))
            hidden = tokens / n * m["hidden"] * 4
            lines.append(f"| {n} | {blocks//n} | {sent} | {into0*chan/1e9:.2f} GB / {into0*(chan+m2)/1e9:.1f} GB "
                         f"| {(n-1)*chan/1e9:.2f} GB / {(n-1)*(chan+m2)/1e9:.1f} GB "
                         f"| {hidden/1e9:.1f} GB | {params*2/1e9:.1f} GB (one layer) |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--predict-bytes", nargs=3, metavar=("CONFIG", "SAMPLES", "NP"))
    ap.add_argument("--second-moments", action="store_true")
    ap.add_argument("--collections", type=int, default=1, help="statistics collections in the pipeline")
    ap.add_argument("--gptq", action="store_true", help="pack spreads every Linear's GPTQ")
    ap.add_argument("--tokens", type=int, default=512 * 2048)
    a = ap.parse_args()
    if a.predict_bytes:
        cfg, samples, ranks = a.predict_bytes
        for r, sent, recv in predict(cfg, int(samples), int(ranks), a.second_moments, a.collections, a.gptq):
            print(f"rank {r}: {sent} bytes sent, {recv} received")
        return
    print(tables(a.tokens, [8, 16, 64]))


if __name__ == "__main__":
    main()
