# Thin wrapper over CMake. `make test` and `make demo` install missing Debian packages first (scripts/deps.sh).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local

.PHONY: all deps configure build test test-gpu demo bench install clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

configure: $(BUILD)/build.ninja

build: deps configure
	cmake --build $(BUILD) -j $(JOBS)

# DS_WORKSPACE_POISON=1: workspaces that skip zero fill hand out NaN bytes, so a read before a write fails a test.
test: build
	cd $(BUILD) && DS_WORKSPACE_POISON=1 ctest --output-on-failure -j $(JOBS) --timeout 600

# CPU-vs-CUDA parity tests only (tests/ops, ctest label gpu); meant for the GPU machine, skipped without a GPU.
test-gpu: deps configure
	cmake --build $(BUILD) -j $(JOBS) --target ds_gpu_tests
	cd $(BUILD) && DS_WORKSPACE_POISON=1 ctest -L gpu --output-on-failure --timeout 900

demo: build
	pipelines/r1-zero.sh $(BUILD)
	@echo "make demo: table demo/r1-zero/summary.txt, plot demo/r1-zero/r1-zero.png (pipelines/README.md)"

bench: build
	bench/run.sh $(BUILD)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD)
