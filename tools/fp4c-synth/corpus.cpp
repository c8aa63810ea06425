#include "corpus.h"

namespace fp4c::synth {

namespace {

// Written for this tool. Non-ASCII characters are letters only (the trainer's pre-tokenizer knows
// the Latin, Greek, Cyrillic and CJK letter ranges, not Unicode's full tables).
const std::string_view kDocuments[] = {
R"TXT(The Lighthouse Keeper

Once upon a time, on a small island at the edge of the northern sea, there lived an old lighthouse
keeper named Tobias. Every evening he climbed the one hundred and twelve steps of the tower, cleaned
the great lens, and lit the lamp before the sun went down. Sailors who passed the island said that
the light had never failed, not even during the storm of the long winter, when the waves were so
high that they washed over the rocks and into the garden where Tobias grew potatoes and beans.

One morning a girl arrived on the supply boat. Her name was Mira, and she was the daughter of the
captain. "I want to learn how the light works," she said. Tobias looked at her for a long time.
"It isn't magic," he answered. "It's patience. You'll climb these stairs every day, and you'll
polish glass that nobody will ever thank you for." Mira smiled. "I'm not afraid of stairs, and I've
cleaned worse things than glass." They'd become friends before the boat had even left the harbor.

Years later, when Tobias could no longer climb the tower, Mira kept the light burning. She wrote
in the logbook each night: the time the lamp was lit, the direction of the wind, the ships she saw,
and the weather. Her handwriting was small and careful, and the pages filled slowly, like the tide.
)TXT",
R"TXT(Quantization of large language models

Modern language models store billions of parameters, usually as 16-bit floating point numbers in
the bfloat16 format. Quantization reduces the number of bits per weight so that a model needs less
memory and less bandwidth during inference. A four-bit format such as NVFP4 stores each value as a
sign bit, two exponent bits and one mantissa bit, and it shares one scale factor between every
block of sixteen consecutive values. The block scale itself is an eight-bit floating point number,
and a second, per-tensor scale keeps the block scales inside their representable range.

The difficulty is that weights and activations are not uniformly distributed. Most values are
small, but a few channels carry outliers that are ten or even a hundred times larger than the
typical magnitude. When a block contains an outlier, the shared scale must grow to represent it,
and the remaining fifteen values lose most of their precision. Techniques like SmoothQuant migrate
the difficulty from activations to weights by dividing each input channel by a smoothing factor
and multiplying the corresponding weight column by the same factor. Other methods search for the
scale that minimizes the mean squared error, or keep sensitive layers in higher precision.

Evaluation matters as much as the method. A careful release process measures perplexity on held
out text, accuracy on downstream tasks, memory use, latency and throughput, and compares every
number against the original checkpoint before a quantized model is published.
)TXT",
R"TXT(def train_tokenizer(corpus: list[str], vocab_size: int = 4096) -> dict[str, int]:
    """Learn byte pair merges from a list of documents."""
    words: dict[tuple[int, ...], int] = {}
    for document in corpus:
        for piece in pretokenize(document):
            key = tuple(piece.encode("utf-8"))
            words[key] = words.get(key, 0) + 1
    merges = []
    while len(merges) + 256 < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], -p[0], -p[1]))
        merges.append(best)
        words = apply_merge(words, best, 256 + len(merges) - 1)
    return {"merges": merges, "size": 256 + len(merges)}


class RunningStats:
    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    @property
    def variance(self) -> float:
        return self.m2 / (self.count - 1) if self.count > 1 else float("nan")


if __name__ == "__main__":
    import json, sys
    stats = RunningStats()
    for line in open(sys.argv[1], encoding="utf-8"):
        record = json.loads(line)
        stats.update(float(record["loss"]))
    print(f"mean={stats.mean:.4f} var={stats.variance:.4f} n={stats.count}")
)TXT",
R"TXT(#include <algorithm>
#include <cstdint>
#include <vector>

namespace quant {

// Rounds x to the nearest value representable in FP4 E2M1, ties to even.
inline float round_e2m1(float x) {
  static constexpr float kGrid[] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float a = std::min(std::abs(x), 6.0f);
  int best = 0;
  for (int i = 1; i < 8; ++i)
    if (std::abs(kGrid[i] - a) < std::abs(kGrid[best] - a)) best = i;
  return x < 0 ? -kGrid[best] : kGrid[best];
}

template <typename T>
std::vector<T> block_absmax(const std::vector<T>& values, size_t block) {
  std::vector<T> out((values.size() + block - 1) / block, T(0));
  for (size_t i = 0; i < values.size(); ++i) {
    out[i / block] = std::max(out[i / block], static_cast<T>(std::abs(values[i])));
  }
  return out;
}

struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;
  float& at(int64_t r, int64_t c) { return data[r * cols + c]; }
};

}  // namespace quant
)TXT",
R"TXT(User: Can you explain why my training loss suddenly jumped to NaN after step 41250?
Assistant: A sudden NaN usually means that a value overflowed somewhere. Check the learning rate
schedule first: if the warmup ended and the rate is too high, the gradients can explode. Then look
at the gradient norm in your logs; a spike right before the NaN is a strong hint. You should also
verify that your loss scaling works when you train in half precision.
User: The gradient norm was 3.2 before and 8704.5 right at the failing step.
Assistant: That's the explosion. Try gradient clipping at 1.0, lower the peak learning rate by a
factor of two, and restart from the last good checkpoint. If it happens again at the same batch,
inspect that batch: corrupted samples with extremely long repeated tokens are a common cause.
User: Thanks! I'll try that and report back tomorrow.
Assistant: Good luck. Don't forget to save the optimizer state together with the weights, or
you'll lose the momentum estimates when you resume.
)TXT",
R"TXT({
  "model_name": "example-7b-instruct",
  "version": "2.5.1",
  "release_date": "2024-09-19",
  "parameters": 7615616512,
  "context_length": 131072,
  "languages": ["en", "zh", "fr", "de", "es", "ja", "ko"],
  "quantization": {"format": "nvfp4", "group_size": 16, "ignore": ["lm_head"]},
  "evaluation": {"mmlu": 0.742, "gsm8k": 0.856, "humaneval": 0.579, "perplexity": 6.893}
}

[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-quantizer"
version = "0.3.0"
dependencies = ["numpy>=1.26", "safetensors>=0.4.3", "tokenizers>=0.19"]
)TXT",
R"TXT(#!/usr/bin/env bash
set -euo pipefail
MODEL_DIR="${1:-./models/qwen2.5-7b}"
OUT_DIR="${2:-./out}"
mkdir -p "$OUT_DIR"
for shard in "$MODEL_DIR"/model-*.safetensors; do
  echo "checking $shard"
  sha256sum "$shard" >> "$OUT_DIR/checksums.txt"
done
if [ ! -f "$MODEL_DIR/config.json" ]; then
  echo "error: missing config.json in $MODEL_DIR" >&2
  exit 1
fi
export OMP_NUM_THREADS=16
time ./build/fp4c quantize --model "$MODEL_DIR" --recipe smoothquant --out "$OUT_DIR/nvfp4"
grep -c '"format": "nvfp4"' "$OUT_DIR/nvfp4/fp4c-manifest.json" || true
)TXT",
R"TXT(| Layer | Format | Max error | Mean error | Reason |
|-------|--------|-----------|------------|--------|
| model.layers.0.self_attn.q_proj | NVFP4 | 0.0312 | 0.0041 | |
| model.layers.0.mlp.down_proj | BF16 | 0 | 0 | in_features 172 % 16 != 0 |
| lm_head | BF16 | 0 | 0 | output projection |

## Results

We measured 12409 predictions on the evaluation set. The original model reached a perplexity of
4.1036, the weight-only variant 4.4529, and the variant with quantized activations 4.7049. On two
cores the calibration pass took 38.7 seconds and used 1161 MiB of memory; on the GPU it took 1.9
seconds. Prices were computed at $2.49 per hour, which makes the whole build cost less than a cent.
)TXT",
R"TXT(SELECT user_id, COUNT(*) AS orders, SUM(total_price) AS revenue
FROM orders
WHERE created_at >= '2024-01-01' AND status <> 'cancelled'
GROUP BY user_id
HAVING COUNT(*) > 3
ORDER BY revenue DESC
LIMIT 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: stats <file>");
    let text = std::fs::read_to_string(path).unwrap();
    let mut counts = std::collections::HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0usize) += 1;
    }
    let mut sorted: Vec<_> = counts.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (word, count) in sorted.iter().take(10) {
        println!("{word:>12} {count}");
    }
}

function debounce(fn, wait = 250) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), wait);
  };
}
const handler = debounce((event) => console.log(`resized to ${event.target.innerWidth}px`));
window.addEventListener("resize", handler);
)TXT",
R"TXT(A Short History of Measurement

People have always measured things. Early farmers counted the days between floods, merchants
weighed grain and silver, and builders used the length of a forearm or a foot. Because every town
had its own units, trade between distant cities was difficult. In 1795 France introduced the metric
system, with the metre defined as one ten-millionth of the distance from the equator to the pole.
Today the metre is defined through the speed of light, exactly 299792458 metres per second, and the
kilogram through the Planck constant.

Measurement is also a habit of mind. Scientists write down not only a number but its uncertainty:
a length of 12.40 plus or minus 0.05 centimetres says more than a length of 12.4 centimetres. The
same discipline applies to software. A benchmark that reports a single run hides the variance; a
careful engineer repeats the measurement, reports the median, and describes the machine, the
compiler, the input and the exact command that produced the result.
)TXT",
R"TXT(Travel notes

In Zürich we drank coffee by the lake and watched the trams. The café near the station served a
crème brûlée that my sister still talks about. In München the beer gardens were crowded, and in
Málaga the evenings were warm enough to eat outside until midnight. My friend from Kraków taught
us to say dziękuję, and a student from Αθήνα wrote the word φως, which means light, on a napkin.
In Москва the metro stations looked like palaces. The last stop was 東京, where the signs showed
both 漢字 and kana, and where a small shop sold the best noodles we had eaten in years.
Naïve travellers, façades, jalapeño, smörgåsbord, déjà vu: the words we borrow tell where we went.
)TXT",
R"TXT(Recipe: Lentil soup for four people

Ingredients: 250 g red lentils, 1 onion, 2 carrots, 3 cloves of garlic, 1 tablespoon of olive oil,
1 teaspoon of cumin, half a teaspoon of turmeric, 1.2 litres of vegetable stock, the juice of one
lemon, salt and pepper.

1. Chop the onion, carrots and garlic into small pieces.
2. Heat the oil in a large pot and cook the onion for 5 minutes until it is soft.
3. Add the carrots, garlic and spices, and stir for another 2 minutes.
4. Rinse the lentils, add them with the stock, and bring everything to a boil.
5. Simmer for 20 to 25 minutes, then blend until smooth and add the lemon juice.
Serve hot with fresh bread. The soup keeps for three days in the fridge and freezes well.
)TXT",
R"TXT(package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

type Server struct {
	requests int64
	started  time.Time
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	s.requests++
	uptime := time.Since(s.started).Seconds()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"status":"ok","uptime":%.1f,"requests":%d}`, uptime, s.requests)
}

func parsePort(value string) (int, error) {
	port, err := strconv.Atoi(value)
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("invalid port %q", value)
	}
	return port, nil
}
)TXT",
R"TXT(Frequently asked questions

Why does the converter refuse to overwrite my output directory?
Because a half-written model is worse than no model. The tool writes into a temporary directory
next to the destination and renames it into place only when every file is complete. Pass --force if
you really want to replace an existing directory.

What happens when a layer's input size is not a multiple of sixteen?
The layer stays in bfloat16 and the manifest records the reason. Real checkpoints have such layers,
for example a feed-forward block with an intermediate size of 172 or 344.

How much memory does the tool need?
It maps the input files instead of reading them, processes one decoder layer at a time, and streams
the output, so the peak memory stays below one gigabyte even for models with eight billion weights.

Is the output reproducible?
Yes. The same inputs and options give byte-identical files, whatever the number of threads, because
every random number is a function of the seed, the tensor name and the position of the element.
)TXT",
R"TXT(2024-03-14 09:26:53.589 INFO  worker-3 loaded shard 2/4 (3.86 GB) in 1.42 s
2024-03-14 09:26:55.013 WARN  worker-1 tensor model.layers.17.mlp.down_proj.weight: 37 values above 6.0
2024-03-14 09:27:01.770 INFO  worker-0 calibration batch 128/512, 65536 tokens, 3517.2 tok/s
2024-03-14 09:27:12.004 ERROR worker-2 failed to open /data/calib/part-0007.jsonl.gz: No such file
2024-03-14 09:27:12.005 INFO  scheduler retrying in 30 s (attempt 2 of 5)
)TXT",
R"TXT(The old fox and the young crow

A crow found a piece of cheese and flew with it to the top of a tall tree. A fox, who had not eaten
since the day before, sat down at the foot of the tree and looked up. "What beautiful feathers you
have," said the fox. "What bright eyes! Surely a bird so lovely must also have a lovely voice. If
only I could hear you sing, I would know that you are the queen of all birds." The crow, who was
very proud, opened her beak to sing, and the cheese fell down. The fox caught it, swallowed it, and
said: "Your voice is fine, my friend. It's your judgement that needs work." Then he walked away,
and the crow learned that flattery is rarely free. Children who hear this story often ask whether
the crow got another piece of cheese. Nobody knows, but she certainly kept her beak shut after that.
)TXT",
};

}  // namespace

std::span<const std::string_view> corpus_documents() { return kDocuments; }

}  // namespace fp4c::synth
