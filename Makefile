# knlp: kernel-style machine learning.
#
#   make defconfig-<preset>   start from a preset (make list-defconfigs)
#   make menuconfig           edit it
#   make                      build and run what .config describes
#   make check                build and run every test
#   make help                 everything else

PYTHON    ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
BUILD     ?= $(if $(SANITIZE),build-san,build)
TORCH_DIR ?=
SANITIZE  ?=
CONFIG    ?= .config
KNLP      := $(BUILD)/knlp
KCONFIG   := $(PYTHON) scripts/kconfig.py
export KCONFIG_CONFIG := $(CONFIG)
export KNLP_VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

# make NAME=value: run-time overrides (a .config symbol, no rebuild, no .config edit) and
# switches of `knlp run` / `knlp matrix`, one table each (docs/kconfig.md lists them).
SET_VARS  := TIME=MAX_TIME MAX_ITERS=MAX_ITERS EPOCHS=EPOCHS SEED=SEED SEEDS=MATRIX_SEEDS BASELINE=MATRIX_BASELINE
FLAG_VARS := YES=--yes DRY_RUN=--dry-run
OPT_VARS  := JOBS=--jobs STOP_ON_FAILURE=--stop-on-failure SHARD=--shard
name_of    = $(firstword $(subst =, ,$(1)))
target_of  = $(lastword $(subst =, ,$(1)))
OVERRIDES := $(foreach p,$(SET_VARS),$(if $($(call name_of,$(p))),--set $(call target_of,$(p))=$($(call name_of,$(p)))))
MATRIX_ARGS := $(foreach p,$(FLAG_VARS),$(if $(filter 1 y yes,$($(call name_of,$(p)))),$(call target_of,$(p)))) \
	$(foreach p,$(OPT_VARS),$(if $($(call name_of,$(p))),$(call target_of,$(p)) $($(call name_of,$(p)))))
RUN_ARGS  := $(MATRIX_ARGS) $(if $(NPROC),--nproc $(NPROC))

CMAKE_FLAGS := -G Ninja -DCMAKE_BUILD_TYPE=Release
# Compiler: clang++ when present (scripts/deps.sh installs it), else the system c++. With
# libtorch's 600 MB of headers clang builds knlp about 2.5x faster: its precompiled header
# carries the template instantiations that GCC redoes in every file (docs/performance.md).
# Decided when CMake first configures a build folder (after deps ran); CXX=g++ overrides.
COMPILER_FLAG = $$(if [ -n "$$CXX" ]; then :; elif command -v clang++ >/dev/null 2>&1; then \
	echo -DCMAKE_CXX_COMPILER=clang++; fi)
ifneq ($(TORCH_DIR),)
CMAKE_FLAGS += -DCMAKE_PREFIX_PATH=$(TORCH_DIR)
endif
# Extra CMake options, e.g. CMAKE_EXTRA=-DKNLP_CXX_STANDARD=20 for libtorch 2.x (docs/gpu.md).
CMAKE_FLAGS += $(CMAKE_EXTRA)
ifneq ($(SANITIZE),)
CMAKE_FLAGS += -DKNLP_SANITIZE=$(SANITIZE) -DCMAKE_BUILD_TYPE=RelWithDebInfo
endif

.PHONY: all run build deps configure check bench hf-quant-study quickstart prepare train help clean mrproper \
	distclean menuconfig oldconfig olddefconfig savedefconfig listnewconfig list-defconfigs \
	randconfig helpcheck continue test-rerun sweep parallel merge-results slurm summary report dashboard ddp fuzz randconfig-sweep check-san-base check-san format

all: run

# knlp run decides from the .config: a test matrix (a MULTIPLE mode, several seeds, a matrix
# list), a data-parallel launch (CONFIG_DDP) or one run; it prepares the data first.
run: build $(CONFIG)-exists
	$(KNLP) run --config $(CONFIG) $(OVERRIDES) $(RUN_ARGS)

# ---- test matrices
continue: build $(CONFIG)-exists
	$(KNLP) matrix --config $(CONFIG) $(OVERRIDES) --continue $(if $(TARGET),--dir $(TARGET),) $(MATRIX_ARGS)

test-rerun: build $(CONFIG)-exists
	@test -n "$(TARGET)" || { echo "knlp: make test-rerun TARGET=<results folder> [OPTIMIZER=name]"; exit 1; }
	$(KNLP) matrix --config $(CONFIG) $(OVERRIDES) --rerun --dir $(TARGET) $(if $(OPTIMIZER),--optimizer $(OPTIMIZER),) $(MATRIX_ARGS)

sweep: build $(CONFIG)-exists
	@test -n "$(RANGE_CONFIG)" || { echo "knlp: make sweep RANGE_CONFIG=<file> (lines CONFIG_X=a|b|c or CONFIG_X=start:step:end)"; exit 1; }
	$(MAKE) --no-print-directory prepare
	$(KNLP) matrix --config $(CONFIG) $(OVERRIDES) --sweep $(RANGE_CONFIG) $(MATRIX_ARGS)

parallel: build $(CONFIG)-exists
	$(KNLP) run --config $(CONFIG) $(OVERRIDES) $(RUN_ARGS) $(if $(JOBS),,--jobs $$(nproc))

merge-results: build
	@test -n "$(OUT)" -a -n "$(DIRS)" || { echo "knlp: make merge-results OUT=<merged folder> DIRS=\"shard1 shard2 ...\""; exit 1; }
	$(KNLP) matrix merge --out $(OUT) $(DIRS)

slurm: $(CONFIG)-exists
	@sh scripts/slurm.sh $(CONFIG) $(if $(SHARDS),$(SHARDS),4) "$(OVERRIDES)"

summary: build
	$(KNLP) matrix summary $(if $(TARGET),$(TARGET),--latest) --graphs

report: build
	$(KNLP) matrix summary $(if $(TARGET),$(TARGET),--latest) --report

# The live dashboard (docs/dashboard.md): PORT=8080 HOST=127.0.0.1, DIRS="runs ..." to choose folders.
dashboard: build
	$(KNLP) dashboard --port $(if $(PORT),$(PORT),8080) --host $(if $(HOST),$(HOST),127.0.0.1) $(DIRS)

.PHONY: $(CONFIG)-exists
$(CONFIG)-exists:
	@test -f $(CONFIG) || { echo "knlp: no $(CONFIG); start from a preset: make defconfig-<name>"; \
		$(KCONFIG) list-defconfigs; exit 1; }

deps:
	@sh scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) $(COMPILER_FLAG)

configure:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) $(COMPILER_FLAG)

build: $(BUILD)/build.ninja
	@cmake --build $(BUILD)

prepare: build $(CONFIG)-exists
	$(KNLP) prepare --config $(CONFIG)

# Every unit test (test_base and test_ml: parsers, models, optimizers, trainers, resume)
# under ASan + UBSan, the shell scripts left out: CI's sanitizer run (docs/robustness.md).
check-san:
	@$(MAKE) --no-print-directory check SANITIZE=address,undefined CTEST_ARGS="-E ^sh_"

# The libtorch-free tests under ASan + UBSan (docs/robustness.md).
check-san-base:
	cmake -S . -B build-san $(filter-out -DKNLP_SANITIZE=% -DCMAKE_BUILD_TYPE=%,$(CMAKE_FLAGS)) $(COMPILER_FLAG) \
		-DKNLP_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build-san --target test_base
	cd build-san && $(SAN_ENV) ./test_base

# Kernel-style formatting of every tracked C++ file (.clang-format); make check fails on a
# file this would change (tests/test_format.sh).
format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i --style=file

# N random configurations, each trained a few steps or rejected cleanly (docs/robustness.md).
N ?= 50
randconfig-sweep: build
	bash scripts/randconfig_sweep.sh $(KNLP) $(N) $(or $(FIRST),1)

# libFuzzer targets for every parser of outside input (docs/robustness.md).
FUZZ_SECONDS ?= 60
fuzz:
	sh scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

train: build $(CONFIG)-exists
	$(KNLP) train --config $(CONFIG) $(OVERRIDES)

# Data-parallel training on this machine: NPROC processes (default CONFIG_DDP_PROCS).
ddp: build $(CONFIG)-exists
	$(KNLP) run --config $(CONFIG) --set DDP=y $(OVERRIDES) $(RUN_ARGS)

# The whole main job on a fresh machine: dependencies, build, default corpus, default preset.
quickstart: deps
	@$(MAKE) --no-print-directory build
	@test -f $(CONFIG) || $(KCONFIG) defconfig gpt2-tiny-cpu
	@$(MAKE) --no-print-directory run

# Sanitizer runs (SANITIZE=address,undefined) build into build-san and use the suppressions
# of tests/sanitizers/ (only what lies inside libtorch itself; each one explained there).
# Stacks in leak reports name functions only with a symbolizer (clang's llvm-symbolizer).
SYMBOLIZER := $(firstword $(wildcard /usr/bin/llvm-symbolizer /usr/lib/llvm-*/bin/llvm-symbolizer))
SAN_ENV := $(if $(SYMBOLIZER),ASAN_SYMBOLIZER_PATH=$(SYMBOLIZER)) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_odr_violation=0 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tests/sanitizers/ubsan.supp
# Only what the tests run (knlp_bench for tests/test_bench.sh; the sanitizer run skips the shell tests).
CHECK_TARGETS := knlp test_ml test_base test_cuda $(if $(SANITIZE),san_leak_probe,knlp_bench)
check: deps $(BUILD)/build.ninja
	@cmake --build $(BUILD) --target $(CHECK_TARGETS)
	@cd $(BUILD) && { $(if $(SANITIZE),$(SAN_ENV)) ctest --output-on-failure -j2 $(if $(CTEST_ARGS),$(CTEST_ARGS),); rc=$$?; \
		$(PYTHON) $(CURDIR)/scripts/check_summary.py Testing/Temporary/LastTest.log; exit $$rc; }

bench: deps
	@$(MAKE) --no-print-directory build
	@bash scripts/bench.sh $(BUILD)

# The seed's quantization experiment on a local Hugging Face Llama / Qwen2 folder
# (docs/quantization.md): HF_MODEL=DIR; HF_DATA=TOKEN_DIR or the Linux documentation
# encoded with the model's tokenizer; OUT, PCT (15), ROLES (ffn_down), CTX (512).
HF_OUT ?= hf-quant-study
hf-quant-study: build
	@test -n "$(HF_MODEL)" || { echo "make hf-quant-study: set HF_MODEL=<Hugging Face folder>"; exit 1; }
	@data="$(HF_DATA)"; if [ -z "$$data" ]; then data=$(HF_OUT)/data; \
		[ -s $$data/meta.json ] || $(KNLP) prepare --corpus /usr/share/doc/linux-doc-6.1/Documentation \
			--tokenizer "$(HF_MODEL)" --out $$data; fi; \
	KNLP=$(KNLP) sh scripts/hf_quant_study.sh "$(HF_MODEL)" "$$data" $(HF_OUT) $(or $(PCT),15) $(or $(ROLES),ffn_down) $(or $(CTX),512)

# ---- Kconfig
defconfig-%:
	@$(KCONFIG) defconfig $* $(FRAGMENTS)

menuconfig:
	@$(PYTHON) -m menuconfig Kconfig

oldconfig:
	@$(PYTHON) -m oldconfig Kconfig

olddefconfig:
	@$(KCONFIG) olddefconfig

savedefconfig:
	@$(KCONFIG) savedefconfig $(if $(DEFCONFIG),defconfigs/$(DEFCONFIG),defconfig)

listnewconfig:
	@$(KCONFIG) listnewconfig

list-defconfigs:
	@$(KCONFIG) list-defconfigs

randconfig:
	@$(KCONFIG) randconfig $(KCONFIG_SEED)

helpcheck:
	@$(KCONFIG) helpcheck

clean:
	@test ! -d $(BUILD) || cmake --build $(BUILD) --target clean

mrproper:
	rm -rf $(BUILD) $(CONFIG) $(CONFIG).old defconfig

distclean: mrproper
	rm -rf datasets runs

help:
	@echo "Configuration (Kconfig, kernel style):"
	@echo "  defconfig-<preset>  write .config from defconfigs/<preset> (FRAGMENTS=\"a.config b.config\" merges more)"
	@echo "  list-defconfigs     list the presets"
	@echo "  menuconfig          edit .config in a terminal menu"
	@echo "  oldconfig           ask for symbols .config does not set yet"
	@echo "  olddefconfig        resolve .config, new symbols at their defaults"
	@echo "  listnewconfig       list symbols .config does not set yet"
	@echo "  savedefconfig       minimal preset from .config (DEFCONFIG=name writes defconfigs/name)"
	@echo "  randconfig          random valid .config (KCONFIG_SEED=n makes it reproducible)"
	@echo "Running:"
	@echo "  all (default)       build, then knlp run: prepare the data and train what .config describes"
	@echo "                      (one run, a test matrix, or a data-parallel launch with CONFIG_DDP)"
	@echo "  quickstart          deps + build + default corpus + train the gpt2-tiny-cpu preset"
	@echo "  prepare / train     one step of the above"
	@echo "  overrides           TIME=<s> MAX_ITERS=<n> SEED=<n> (run time, .config untouched)"
	@echo "  ddp                 NPROC=<n> data-parallel processes on this machine (docs/distributed.md;"
	@echo "                      torchrun --no-python --nproc_per_node=N build/knlp train ... and srun work too)"
	@echo "Test matrices (a .config with a MULTIPLE mode or SEEDS>1; docs/matrix.md):"
	@echo "  all                 run the matrix (YES=1 skips the question, DRY_RUN=1 prints the plan)"
	@echo "  continue            resume the newest results folder (TARGET=<folder> picks one)"
	@echo "  test-rerun          TARGET=<folder> [OPTIMIZER=name]: re-run runs from zero"
	@echo "  parallel            JOBS=<n> runs at once, each pinned to its share of the cores"
	@echo "  sweep               RANGE_CONFIG=<file>: lines CONFIG_X=a|b|c or start:step:end, crossed with the matrix"
	@echo "  SHARD=k/N           run one shard; merge-results OUT=<dir> DIRS=\"a b\" joins them"
	@echo "  slurm               SHARDS=<n>: write a Slurm job-array script for the shards"
	@echo "  summary / report    knlp matrix summary: tables + plots / + self-contained report.html and dashboard.html"
	@echo "  dashboard           live web dashboard of runs/ and test_matrix_results_* (PORT=, HOST=, DIRS=)"
	@echo "  SEEDS=<n> BASELINE=<config id or folder/config id>  seeds and comparisons"
	@echo "Development:"
	@echo "  deps                install Debian packages and the GPT-2 vocabulary"
	@echo "  build               build $(BUILD)/knlp (TORCH_DIR=/path/to/libtorch for CUDA builds)"
	@echo "  check               build and run all tests (SANITIZE=address,undefined for sanitizers)"
	@echo "  bench               benchmarks (ratios against baselines run in the same invocation)"
	@echo "  hf-quant-study      HF_MODEL=<Hugging Face folder>: the seed's Q3_K_M + Fisher upgrades study"
	@echo "  check-san           every unit test under ASan + UBSan (what CI runs; SANITIZE=... check: all tests)"
	@echo "  check-san-base      the libtorch-free tests under ASan + UBSan (a few minutes)"
	@echo "  randconfig-sweep    N=50 random configurations: each trains a few steps or is rejected cleanly"
	@echo "  fuzz                libFuzzer on every parser (FUZZ_SECONDS=60 each, FUZZ_TARGETS=\"npz gguf\" for some)"
	@echo "  format              clang-format every tracked C++ file (kernel style; make check checks it)"
	@echo "  clean / mrproper / distclean   remove build outputs / + .config / + data and runs"
