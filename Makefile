# moecpu — build, test, bench.
#   make              ./moecpu for this machine's architecture (runs on any CPU of it)
#   make test         unit tests natively, again under ASan+UBSan, and the
#                     kernel tests cross-built for aarch64 under qemu
#   make bench        the benchmark entry points (moecpu bench ...)
# ISA flags go only on the files in simd/ that need them: never -march=native.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra
CFLAGS  ?=
CFLAGS  += $(CSTD) $(OPT) -g $(WARN) $(if $(WERROR),-Werror) -MMD -MP
LDFLAGS ?=
ARCH    := $(shell $(CC) -dumpmachine | sed 's/-.*//')

ifeq ($(ARCH),aarch64)
  # Cross builds link the multiarch runtime libraries by soname (the arm64
  # -dev packages conflict with the amd64 ones; the headers are the same).
  LIBS := -l:libsleef.so.3 -l:libcpuinfo.so.0 -ljansson -l:libpcre2-8.so.0 -lpthread -lm
  SIMD := simd/neon.c simd/neon_dotprod.c
  EDIT_LIBS := -l:libedit.so.2
else
  LIBS := $(shell pkg-config --libs sleef libcpuinfo jansson libpcre2-8 2>/dev/null || echo -lsleef -lcpuinfo -ljansson -lpcre2-8) -lpthread -lm
  SIMD := simd/avx2.c simd/avx512.c
  # line editing for `moecpu chat` (BSD licence; readline is GPL)
  EDIT_LIBS := $(shell pkg-config --libs libedit 2>/dev/null || echo -ledit)
endif

FLAGS_simd/avx2.c         := -mavx2 -mfma -mf16c
FLAGS_simd/avx512.c       := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c
FLAGS_simd/neon.c         := -march=armv8-a
FLAGS_simd/neon_dotprod.c := -march=armv8.2-a+dotprod
# Same tokens for the same seed on every machine: no fused multiply-adds.
FLAGS_src/sampler.c       := -ffp-contract=off

CORE_SRC  := quant/formats.c quant/ref.c simd/dispatch.c simd/scalar.c $(SIMD) src/threads.c \
             src/model_files.c src/gguf.c src/gguf_write.c src/safetensors.c src/config.c src/model.c src/forward.c src/pager.c \
             src/tokenizer.c
# text generation: sampler, chat format
CORE_SRC  += src/sampler.c src/chat.c
MAIN_SRC  := src/main.c bench/kernels.c bench/model.c bench/pager_replay.c src/cli_pager.c src/cli_tokenize.c bench/tokenizer.c src/cli_run.c src/cli_chat.c \
             src/cli_stream.c
TEST_SRC  := $(wildcard tests/test_*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ  := $(MAIN_SRC:%.c=$(BUILD)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test test-native test-asan test-clang test-arm64 bench clean tests
all: moecpu

moecpu: $(BUILD)/moecpu
	cp $< $@

$(BUILD)/moecpu: $(MAIN_OBJ) $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS) $(EDIT_LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FLAGS_$<) -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lcmocka $(LIBS)

# The CLI's output stream is tested on its own (it is not in CORE_SRC).
$(BUILD)/tests/test_cli_stream: tests/test_cli_stream.c $(BUILD)/src/cli_stream.o $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lcmocka $(LIBS)

# Tiny random DeepSeek models for the tests (tests/gen_model.c --help).
$(BUILD)/gen_model: tests/gen_model.c $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

# A pseudo-terminal driver for the interactive chat tests (tests/cli_text.sh).
$(BUILD)/pty_drive: tests/pty_drive.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -lutil

tests: $(TEST_BIN) $(BUILD)/gen_model $(BUILD)/pty_drive

# The whole suite: native (every ISA table this CPU runs), sanitizers,
# clang, aarch64 under qemu; the last line totals all of them.
TALLY := $(CURDIR)/build/test-tally.txt
test:
	@mkdir -p build && rm -f $(TALLY)
	$(MAKE) --no-print-directory MOECPU_TEST_TALLY=$(TALLY) test-native test-asan test-clang test-arm64
	@awk '{p+=$$1; f+=$$2; s+=$$3} END {printf "%d passed, %d failed, %d skipped\n", p, f, s}' $(TALLY)

test-native: $(TEST_BIN) $(BUILD)/gen_model $(BUILD)/pty_drive moecpu
	MOECPU_BIN=./moecpu MOECPU_GEN_MODEL=$(CURDIR)/$(BUILD)/gen_model scripts/run-tests.sh $(TEST_BIN) tests/cli.sh tests/llama_ref.sh tests/tokenizer_ref.sh tests/cli_text.sh

test-asan:
	$(MAKE) --no-print-directory BUILD=build-asan WERROR=1 OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" tests build-asan/moecpu
	MOECPU_TEST_QUICK=1 MOECPU_BIN=build-asan/moecpu MOECPU_GEN_MODEL=$(CURDIR)/build-asan/gen_model scripts/run-tests.sh $(TEST_SRC:tests/%.c=build-asan/tests/%) tests/cli.sh tests/cli_text.sh

# clang must build everything warning-free too (x86-64, and aarch64 built
# only); its x86 kernel code is tested as well.
test-clang:
	$(MAKE) --no-print-directory BUILD=build-clang-arm64 CC="clang --target=aarch64-linux-gnu" WERROR=1 build-clang-arm64/moecpu
	$(MAKE) --no-print-directory BUILD=build-clang CC=clang WERROR=1 tests build-clang/moecpu
	MOECPU_TEST_QUICK=1 MOECPU_BIN=build-clang/moecpu MOECPU_GEN_MODEL=$(CURDIR)/build-clang/gen_model scripts/run-tests.sh $(TEST_SRC:tests/%.c=build-clang/tests/%) tests/cli.sh

# Under qemu (10-50x slower) the kernel, format, loader and tokenizer tests.  The
# thread-pool and forward-pass tests run natively only: qemu-user 7.2 can
# hang in multi-threaded programs, and the forward pass is compared across
# every table natively.
QEMU_TESTS := test_formats test_kernels test_loaders test_tokenizer test_route
test-arm64:
	$(MAKE) --no-print-directory BUILD=build-arm64 CC=aarch64-linux-gnu-gcc WERROR=1 \
	    $(QEMU_TESTS:%=build-arm64/tests/%) build-arm64/moecpu
	for cpu in max cortex-a57; do \
	  QEMU_CPU=$$cpu MOECPU_TEST_QUICK=1 MOECPU_BIN=build-arm64/moecpu \
	    scripts/run-tests.sh --qemu $(QEMU_TESTS:%=build-arm64/tests/%) tests/cli.sh || exit 1; \
	done

bench: moecpu

clean:
	rm -rf build build-asan build-clang build-clang-arm64 build-arm64 moecpu

-include $(CORE_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
