#!/usr/bin/env python3
"""Writes SAMPLES records of SEQ_LEN random token ids (below 2900, seed 0) as input_ids JSON lines: the
calibration and evaluation data of the end-to-end benches.

  bench/random_ids.py PATH SAMPLES SEQ_LEN
"""
import json
import random
import sys

path, n, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(0)
with open(path, "w") as f:
    for _ in range(n):
        f.write(json.dumps({"input_ids": [r.randrange(2900) for _ in range(length)]}) + "\n")
