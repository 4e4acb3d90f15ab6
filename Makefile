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
CFLAGS  += $(CSTD) $(OPT) -g $(WARN) -MMD -MP
LDFLAGS ?=
ARCH    := $(shell $(CC) -dumpmachine | sed 's/-.*//')

ifeq ($(ARCH),aarch64)
  # Cross builds link the multiarch runtime libraries by soname (the arm64
  # -dev packages conflict with the amd64 ones; the headers are the same).
  LIBS := -l:libsleef.so.3 -l:libcpuinfo.so.0 -lpthread -lm
  SIMD := simd/neon.c simd/neon_dotprod.c
else
  LIBS := $(shell pkg-config --libs sleef libcpuinfo 2>/dev/null || echo -lsleef -lcpuinfo) -lpthread -lm
  SIMD := simd/avx2.c simd/avx512.c
endif

FLAGS_simd/avx2.c         := -mavx2 -mfma -mf16c
FLAGS_simd/avx512.c       := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c
FLAGS_simd/neon.c         := -march=armv8-a
FLAGS_simd/neon_dotprod.c := -march=armv8.2-a+dotprod

CORE_SRC  := quant/formats.c quant/ref.c simd/dispatch.c simd/scalar.c $(SIMD) src/threads.c
MAIN_SRC  := src/main.c bench/kernels.c
TEST_SRC  := $(wildcard tests/test_*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ  := $(MAIN_SRC:%.c=$(BUILD)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test test-native test-asan test-arm64 bench clean
all: moecpu

moecpu: $(BUILD)/moecpu
	cp $< $@

$(BUILD)/moecpu: $(MAIN_OBJ) $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FLAGS_$<) -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(CORE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lcmocka $(LIBS)

tests: $(TEST_BIN)

# The whole suite: native (every ISA table this CPU runs), sanitizers, aarch64 under qemu.
test: test-native test-asan test-arm64

test-native: $(TEST_BIN)
	scripts/run-tests.sh $(TEST_BIN)

test-asan:
	$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
	    LDFLAGS="-fsanitize=address,undefined" tests
	MOECPU_TEST_QUICK=1 scripts/run-tests.sh $(TEST_SRC:tests/%.c=build-asan/tests/%)

test-arm64:
	$(MAKE) --no-print-directory BUILD=build-arm64 CC=aarch64-linux-gnu-gcc tests
	for cpu in max cortex-a57; do \
	  QEMU_CPU=$$cpu MOECPU_TEST_QUICK=1 scripts/run-tests.sh --qemu $(TEST_SRC:tests/%.c=build-arm64/tests/%) || exit 1; \
	done

bench: moecpu

clean:
	rm -rf build build-asan build-arm64 moecpu

-include $(CORE_OBJ:.o=.d) $(MAIN_OBJ:.o=.d)
