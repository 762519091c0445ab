# llmq — build, test, demo, bench. Objects and binaries go under build/.
CC      ?= gcc
BUILD   ?= build
OPT     ?= -O2
# `make MPI=1`: the build that spreads calibration over `mpirun` ranks
# (llmq/dist.h), with Open MPI's mpicc, in its own directory.
ifeq ($(MPI),1)
CC      := mpicc
BUILD   := build-mpi
EXTRA_CFLAGS += -DLLMQ_MPI
endif
ARCH    := $(shell $(CC) -dumpmachine | cut -d- -f1)
PKGS    := openblas lapacke jansson libcurl libpcre2-8 libutf8proc libcrypto

# A fresh machine gets the Debian packages while this Makefile is read, before
# any job starts (so `make -j2` never compiles beside the install) and before
# the pkg-config flags below are read. `make clean` needs none of it.
ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),all)),)
ifneq ($(shell pkg-config --exists $(PKGS) criterion && echo yes),yes)
$(info make: installing the build dependencies (scripts/install-deps.sh))
DEPS_STATUS := $(shell bash scripts/install-deps.sh >&2; echo $$?)
ifneq ($(DEPS_STATUS),0)
$(error scripts/install-deps.sh failed (exit $(DEPS_STATUS)))
endif
endif
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g $(OPT) -fopenmp -Iinclude $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  += $(PKG_LIBS) -fopenmp -lm $(EXTRA_LDLIBS)

LIB_SRC  := $(sort $(wildcard src/util/*.c src/formats/*.c src/io/*.c src/model/*.c src/quant/*.c src/kernels/*.c src/eval/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libllmq.a
BIN      := $(BUILD)/llmq
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

# ISA-specific kernels: only their own files get the extra instruction sets;
# the dispatcher picks them at run time from CPU features.
ifeq ($(ARCH),x86_64)
$(BUILD)/src/kernels/%_avx2.o: CFLAGS += -mavx2 -mfma -mf16c
# The forward's SiLU and softmax loops (exp_vec's clamp) vectorise only when
# GCC may if-convert float compares; llmq never reads FP exception flags, and
# results are unchanged (no reassociation, no change of rounding).
$(BUILD)/src/model/llama.o: CFLAGS += -fno-trapping-math
$(BUILD)/src/kernels/%_avx512.o: CFLAGS += -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512vnni
$(BUILD)/src/kernels/syrk_bf16_avx512.o: CFLAGS += -mavx512bf16
$(BUILD)/src/kernels/xsum_avx512.o: CFLAGS += -mavx512dq
endif

.PHONY: all deps test test-neon sanitize fuzz fuzz-deps demo bench clean
all: deps $(BIN)

# The packages are installed while the Makefile is read (above); this target
# stays for scripts that name it, and for the tools the fuzz and NEON targets add.
deps:
	@pkg-config --exists $(PKGS) criterion || bash scripts/install-deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(LIB) tests/test_util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -MMD -MP -o $@ $< $(LIB) $(LDLIBS) -lcriterion

# forkpty (the live progress line is tested on a pseudo-terminal); in libc itself since glibc 2.34.
$(BUILD)/tests/test_quantize: LDLIBS += -lutil

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -o $@ $< $(LIB) $(LDLIBS)

# NEON kernels: a static AArch64 driver (plain C, no Criterion, no BLAS)
# cross-built and run under qemu-aarch64; `make test` runs it when both tools exist.
CROSS_CC ?= aarch64-linux-gnu-gcc
QEMU_AARCH64 ?= qemu-aarch64
HAVE_NEON_CROSS := $(shell command -v $(CROSS_CC) >/dev/null 2>&1 && command -v $(QEMU_AARCH64) >/dev/null 2>&1 && echo yes)

# CONFORMANCE=0 leaves out the llama.cpp conformance check (tests/conformance/run.sh).
# scripts/check-deps.py holds src/ to one-way dependencies between its folders
# (util -> formats -> kernels | io -> model -> quant | eval -> cli) and to no
# include or call circle between files; tests/deps/run.sh proves it on small trees.
CONFORMANCE ?= 1
test: deps $(BIN) $(TEST_BIN)
	@bash scripts/run-tests.sh $(TEST_BIN)
	@python3 scripts/check-deps.py --objects $(BUILD)/src
	@CC="$(CC)" bash tests/deps/run.sh
ifneq ($(CONFORMANCE),0)
	@bash tests/conformance/run.sh $(BIN)
endif
ifneq ($(MPI_TEST),0)
	@bash tests/mpi/run.sh $(BIN)
endif
ifneq ($(HAVE_NEON_CROSS),)
	@$(MAKE) --no-print-directory test-neon
else
	@echo "test-neon skipped: $(CROSS_CC) or $(QEMU_AARCH64) missing (bash scripts/install-deps.sh installs them)"
endif

NEON_SRC := src/util/error.c src/formats/types.c src/formats/blocks.c src/formats/rtn.c src/formats/hf_grid.c \
            src/kernels/dispatch.c src/kernels/scalar.c src/kernels/quant_neon.c src/kernels/quant_avx2.c src/kernels/quant_avx512.c
$(BUILD)/neon/test_neon: tests/neon/test_neon.c tests/kernel_check.h src/kernels/kernel_ops.h $(NEON_SRC) $(wildcard include/llmq/*.h)
	@mkdir -p $(dir $@)
	$(CROSS_CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unknown-pragmas -O2 -static -Iinclude -Itests -o $@ tests/neon/test_neon.c $(NEON_SRC) -lm

test-neon: $(BUILD)/neon/test_neon
	@echo "== $< (qemu-aarch64)"
	@$(QEMU_AARCH64) $<

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize:
	$(MAKE) BUILD=build-san OPT=-O1 CONFORMANCE=0 MPI_TEST=0 EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" EXTRA_LDLIBS="-fsanitize=address,undefined" test

# libFuzzer drivers (tests/fuzz/fuzz_*.c) against the library rebuilt with clang,
# coverage instrumentation and ASan+UBSan; `make fuzz FUZZ_SECONDS=N` runs each for N s.
FUZZ_CC      ?= clang
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 -fopenmp -Iinclude $(PKG_CFLAGS) \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -Wno-pass-failed
FUZZ_BIN     := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
# The parsers need no kernels (whose CPU-feature probes are gcc-specific), model or quantizers.
FUZZ_NOT_PARSERS := src/kernels/% src/eval/% src/model/llama.c src/model/synth.c src/model/gguf_model.c \
                    src/model/load_gguf.c src/model/load_safetensors.c \
                    src/quant/gptq.c src/quant/awq.c src/quant/calibrated.c src/quant/quantize.c src/quant/policy.c src/quant/calib.c
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(filter-out $(FUZZ_NOT_PARSERS),$(LIB_SRC)))

fuzz-deps:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || bash scripts/install-deps.sh

$(FUZZ_BUILD)/src/%.o: src/%.c | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/libllmq.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_BUILD)/libllmq.a | fuzz-deps
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Isrc/io -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libllmq.a $(PKG_LIBS) -lm

fuzz: deps $(FUZZ_BIN)
	@bash scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

MODEL ?= models/llmq-demo
TEXT  ?=
demo: deps $(BIN)
	@bash scripts/demo.sh "$(MODEL)" "$(TEXT)"

# Each bench/bench_*.c is a program printing its own table; scripts/bench.sh runs them all,
# then scripts/bench-llamacpp.sh compares prompt processing with llama.cpp on the same files.
# REALSIZE=0 leaves out the real-shape run (scripts/bench-realsize.sh: one layer of
# Llama-2-7B and Llama-3-8B shapes, several minutes on 2 cores).
# IMATRIX=0 leaves out the comparison with llama.cpp's llama-imatrix + llama-quantize
# (scripts/bench-imatrix.sh: llama.cpp built from node-llama-cpp's bundled source the
# first time, ~10 CPU minutes; then a Llama-2-7B-shaped layer, a few minutes on 2 cores).
# MIXES_BENCH=0 leaves out KL against bits per weight for llama.cpp's mixes and --target-bpw
# (scripts/bench-mixes.sh on stories-llama-7m, llama-quantize --imatrix when built; ~30 minutes).
REALSIZE ?= 1
IMATRIX ?= 1
MIXES_BENCH ?= 1
bench: deps $(BIN) $(BENCH_BIN)
	@bash scripts/bench.sh $(BENCH_BIN)
	@bash scripts/bench-llamacpp.sh $(BIN) $(BUILD)/bench/bench_forward
ifneq ($(REALSIZE),0)
	@SHAPES_DIR=$(BUILD)/shapes bash scripts/bench-realsize.sh $(BUILD)
endif
ifneq ($(IMATRIX),0)
	@SHAPES_DIR=$(BUILD)/shapes bash scripts/bench-imatrix.sh $(BUILD)
endif
ifneq ($(PP),0)
	@SHAPES_DIR=$(BUILD)/shapes bash scripts/bench-pp.sh $(BUILD)
endif
ifneq ($(MIXES_BENCH),0)
	@bash scripts/bench-mixes.sh $(BUILD)
endif

clean:
	rm -rf $(BUILD) build-san $(FUZZ_BUILD)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d) $(BENCH_BIN:=.d) $(FUZZ_LIB_OBJ:.o=.d)
