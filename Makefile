# Thin wrapper over CMake. `make demo` and `make test` do all the set-up on a fresh machine.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup configure build test demo bench conformance clean

all: build

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > /dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest -LE gpu --output-on-failure -j $(JOBS) --timeout 1200

# The main job on the embedded default model: a synthetic Qwen2-shaped checkpoint made on the fly,
# quantized to NVFP4 W4A16 and, calibrated on text, W4A4; each evaluated against the BF16 model and
# inspected.
DEMO_TEXT = testdata/tokenizers/corpus.txt
DEMO_SET = --packing chunks --seq-len 128
demo: build
	rm -rf $(BUILD)/demo && mkdir -p $(BUILD)/demo
	$(BUILD)/fp4c-synth --preset tiny --out $(BUILD)/demo/model
	$(BUILD)/fp4c quantize --model $(BUILD)/demo/model --scheme w4a16 --out $(BUILD)/demo/model-w4a16
	$(BUILD)/fp4c inspect $(BUILD)/demo/model-w4a16 --top 8
	$(BUILD)/fp4c quantize --model $(BUILD)/demo/model --out $(BUILD)/demo/model-w4a4 \
	  --calib $(DEMO_TEXT) $(DEMO_SET) --calib-samples 32 --seed 1
	$(BUILD)/fp4c eval --model $(BUILD)/demo/model --artifact $(BUILD)/demo/model-w4a16 --data $(DEMO_TEXT) \
	  $(DEMO_SET) --samples 32 --seed 2
	$(BUILD)/fp4c eval --model $(BUILD)/demo/model --artifact $(BUILD)/demo/model-w4a4 --data $(DEMO_TEXT) \
	  $(DEMO_SET) --samples 32 --seed 2
	$(BUILD)/fp4c inspect $(BUILD)/demo/model-w4a4 --verify

# Loader conformance (not in `make test`: it downloads PyTorch, compressed-tensors and transformers from PyPI
# into a virtual environment): fp4c's compressed-tensors artifacts (NVFP4 and MXFP4, W4A16 and W4A4) of ../shared/models/stories260K loaded and
# decompressed by them, every weight compared with the packed bytes' NVFP4 or MXFP4 values, perplexity against fp4c eval.
STORIES ?= ../shared/models/stories260K
CONFORMANCE_VENV ?= $(BUILD)/conformance-venv
conformance: build
	test -x $(CONFORMANCE_VENV)/bin/python || python3 -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/pip install -q torch compressed-tensors transformers safetensors numpy
	$(CONFORMANCE_VENV)/bin/python scripts/conformance/loader_conformance.py --fp4c $(BUILD)/fp4c \
	  --model $(STORIES) --eval $(STORIES)/eval.jsonl --calib $(STORIES)/calib.jsonl --work $(BUILD)/conformance

bench: build
	@for b in $(BUILD)/*_bench; do $$b --benchmark_repetitions=3 --benchmark_report_aggregates_only=true; done

clean:
	rm -rf $(BUILD)
