# libaepo build, install, test, bench and demo.
#   make                 build build/lib/libaepo.so (static Swift stdlib, SONAME libaepo.so.<ABI>)
#   make install PREFIX=/usr/local
#   make test            no citations of pages outside the repo (test-refs), Swift unit tests,
#                        C smoke tests (plain, C++, ASan/UBSan), reliability
#                        checks (fuzz corpus replay, ABI guard, bad inputs, stress, leaks), pytest,
#                        the C example trainer (plain and ASan/UBSan)
#   make fuzz            every libFuzzer harness for FUZZ_SECONDS each, FUZZ_JOBS at a time
#   make bench           speed table against numpy / PyTorch (3-7 runs a row), also bench/results.json;
#                        make bench-full: 7-11 runs a row
#   make demo            a short training run showing entropy control
#   make example         the C example trainer, build/example/aepo_train, against the staged install
# Set-up (apt packages, the Python virtualenv under ~/.cache/libaepo) happens on demand.

SHELL := /bin/bash
# The version and ABI number are read from include/aepo.h, where they are written once.
header_define = $(shell sed -n 's/^\#define AEPO_$(1) \([0-9][0-9]*\)$$/\1/p' include/aepo.h)
VERSION := $(call header_define,VERSION_MAJOR).$(call header_define,VERSION_MINOR).$(call header_define,VERSION_PATCH)
ABI := $(call header_define,ABI_VERSION)
PREFIX ?= /usr/local
CC ?= cc
CXX ?= c++
THREADS ?= 2

STATIC_SCRATCH := .build-static
BUILD := build
REAL_SO := libaepo.so.$(VERSION)
STAGE := $(CURDIR)/$(BUILD)/stage
SWIFT_SO_FLAGS := -c release --product aepo --scratch-path $(STATIC_SCRATCH) \
	-Xswiftc -static-stdlib -Xswiftc -use-ld=lld \
	-Xlinker -soname=libaepo.so.$(ABI) \
	-Xlinker --version-script=$(CURDIR)/exports.map

SOURCES := $(shell find Sources include -type f) Package.swift exports.map Makefile
CSMOKE := $(wildcard Tests/c/smoke_*.c)
CWARN := -Wall -Wextra -Werror -pedantic

.PHONY: all lib deps venv install stage bench-chunks test test-refs test-swift test-c test-python test-demo \
        test-example example check-exports bench bench-full bench-isa bench-blas-cores demo demo-grid clean fuzz fuzz-build test-fuzz test-reliability \
        reliability-table leak-valgrind tsan

all: lib

deps:
	@scripts/deps.sh

$(BUILD)/lib/$(REAL_SO): $(SOURCES) | deps
	swift build $(SWIFT_SO_FLAGS)
	@mkdir -p $(BUILD)/lib
	cp $(STATIC_SCRATCH)/release/libaepo.so $@.tmp && strip --strip-unneeded $@.tmp && mv $@.tmp $@
	ln -sf $(REAL_SO) $(BUILD)/lib/libaepo.so.$(ABI)
	ln -sf libaepo.so.$(ABI) $(BUILD)/lib/libaepo.so

lib: $(BUILD)/lib/$(REAL_SO)

venv:
	@scripts/venv.sh

define INSTALL_TO
	install -d $(1)/lib/pkgconfig $(1)/include
	install -m 0755 $(BUILD)/lib/$(REAL_SO) $(1)/lib/$(REAL_SO)
	ln -sf $(REAL_SO) $(1)/lib/libaepo.so.$(ABI)
	ln -sf libaepo.so.$(ABI) $(1)/lib/libaepo.so
	install -m 0644 include/aepo.h $(1)/include/aepo.h
	sed -e 's|@PREFIX@|$(1)|g' -e 's|@VERSION@|$(VERSION)|g' scripts/aepo.pc.in > $(1)/lib/pkgconfig/aepo.pc
endef

install: lib
	$(call INSTALL_TO,$(DESTDIR)$(PREFIX))

# A private install used by the tests, so they exercise exactly what users get.
stage: lib
	@rm -rf $(STAGE)
	@$(call INSTALL_TO,$(STAGE))

# The suites run in this order, each timed.
TEST_SUITES := test-refs deps lib test-swift stage check-exports test-c test-reliability test-fuzz test-python \
               test-demo test-example
test:
	@all=$$(date +%s); for t in $(TEST_SUITES); do \
	  s=$$(date +%s); $(MAKE) --no-print-directory $$t || exit 1; \
	  echo "make test: $$t took $$(( $$(date +%s) - s )) s"; done; \
	  echo "make test: all suites passed in $$(( $$(date +%s) - all )) s"

# Every citation must resolve inside the repository (docs/API.md is the contract).
test-refs:
	@sh scripts/check_no_outside_refs.sh

test-swift:
	swift test -c release

check-exports: stage
	python3 scripts/check_exports.py $(STAGE)/lib/$(REAL_SO) $(STAGE)/include/aepo.h

PKG := PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig pkg-config
test-c: stage
	@mkdir -p Tests/c/bin
	@set -e; for src in $(CSMOKE); do \
	  name=$$(basename $$src .c); \
	  $(CC) -std=c99 $(CWARN) $$src -o Tests/c/bin/$$name $$($(PKG) --cflags --libs aepo) -lm -Wl,-rpath,$(STAGE)/lib; \
	  $(CXX) -x c++ -std=c++11 $(CWARN) $$src -o Tests/c/bin/$$name.cxx $$($(PKG) --cflags --libs aepo) -lm -Wl,-rpath,$(STAGE)/lib; \
	  $(CC) -std=c99 $(CWARN) -g -fsanitize=address,undefined -fno-sanitize-recover=all $$src -o Tests/c/bin/$$name.san \
	    $$($(PKG) --cflags --libs aepo) -lm -Wl,-rpath,$(STAGE)/lib; \
	  Tests/c/bin/$$name; \
	  Tests/c/bin/$$name.cxx > /dev/null; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 Tests/c/bin/$$name.san > /dev/null; \
	  echo "$$name: C, C++ and ASan/UBSan builds passed"; \
	done

test-python: stage
	@V=$$(scripts/venv.sh) && \
	  $$V/bin/pip install -q --no-build-isolation --no-deps -e bindings/python && \
	  AEPO_LIB_PATH=$(STAGE)/lib/$(REAL_SO) PYTHONPATH=$(CURDIR)/bindings/python $$V/bin/python -m pytest -q bindings/python/tests

# The C example trainer, built from the staged install alone (header and pkg-config), as a
# user builds it after `make install`; the rpath lets it run from the stage.
EXAMPLE_DIR := $(BUILD)/example
EXAMPLE_SRC := $(wildcard bindings/c/examples/*.c)
example: stage
	@mkdir -p $(EXAMPLE_DIR)
	$(CC) -std=c99 $(CWARN) -O2 $(EXAMPLE_SRC) -o $(EXAMPLE_DIR)/aepo_train \
	  $$($(PKG) --cflags --libs aepo) -lm -Wl,-rpath,$(STAGE)/lib

test-example: example
	@$(CC) -std=c99 $(CWARN) -g -fsanitize=address,undefined -fno-sanitize-recover=all $(EXAMPLE_SRC) \
	  -o $(EXAMPLE_DIR)/aepo_train.san $$($(PKG) --cflags --libs aepo) -lm -Wl,-rpath,$(STAGE)/lib
	@Tests/c/test_example.sh $(EXAMPLE_DIR)

bench: lib
	@V=$$(scripts/venv.sh) && \
	  AEPO_LIB_PATH=$(CURDIR)/$(BUILD)/lib/$(REAL_SO) PYTHONPATH=bindings/python \
	  $$V/bin/python bench/run.py --threads $(THREADS)
	@$(MAKE) --no-print-directory bench-isa

# The long version: at least 7 interleaved runs per row, up to 11 while the ratio is noisy.
bench-full: lib
	@V=$$(scripts/venv.sh) && \
	  AEPO_LIB_PATH=$(CURDIR)/$(BUILD)/lib/$(REAL_SO) PYTHONPATH=bindings/python \
	  $$V/bin/python bench/run.py --threads $(THREADS) --runs 7 --max-runs 11
	@$(MAKE) --no-print-directory bench-isa

# cblas_sgemm under each OpenBLAS core, each in its own process (docs/FUSED.md).
bench-blas-cores:
	@V=$$(scripts/venv.sh) && $$V/bin/python bench/blas_cores.py

# Each kernel path this CPU has (portable SIMD, AVX2, AVX-512), timed against the others.
bench-isa:
	@swift build -c release --product aepo-isa-bench 2>&1 | grep -v '^\[' || true
	@.build/release/aepo-isa-bench

# How fused.chunk_n sets loss_and_grad's speed (docs/FUSED.md): CHUNKS="128 512".
CHUNKS ?= 64 128 192 256 384 512 1024
bench-chunks: lib
	@V=$$(scripts/venv.sh) && \
	  AEPO_LIB_PATH=$(CURDIR)/$(BUILD)/lib/$(REAL_SO) PYTHONPATH=bindings/python \
	  $$V/bin/python bench/fused_chunk_sweep.py --threads $(THREADS) $(CHUNKS)

# The demo's self-tuning runs beside the best fixed-gain PI of a grid search (docs/DEMO.md);
# about 550 training runs, 10-20 minutes on 2 cores.
demo-grid: lib
	@V=$$(scripts/venv.sh) && \
	  AEPO_LIB_PATH=$(CURDIR)/$(BUILD)/lib/$(REAL_SO) PYTHONPATH=$(CURDIR)/bindings/python \
	  $$V/bin/python bench/demo_gain_grid.py --jobs $(THREADS)

demo:
	@start=$$(date +%s%N); \
	  scripts/deps.sh && $(MAKE) --no-print-directory lib && V=$$(scripts/venv.sh) && \
	  echo "demo: set-up (system packages, build, virtualenv) took $$(( ($$(date +%s%N) - start) / 1000000 )) ms" && \
	  AEPO_LIB_PATH=$(CURDIR)/$(BUILD)/lib/$(REAL_SO) PYTHONPATH=$(CURDIR)/bindings/python \
	  $$V/bin/python -m aepo.demo $(ARGS)

# The smoke version of the demo that `make test` runs: it must produce every output.
DEMO_SMOKE := $(BUILD)/demo-smoke
test-demo: lib
	@rm -rf $(DEMO_SMOKE)
	@$(MAKE) --no-print-directory demo ARGS="--steps 3 --targets 1 --quiet --eval-samples 8 --out $(DEMO_SMOKE)"
	@for f in metrics.csv entropy.png pass_at_k.png summary.json; do \
	  test -s $(DEMO_SMOKE)/$$f || { echo "test-demo: $(DEMO_SMOKE)/$$f is missing"; exit 1; }; done
	@test $$(wc -l < $(DEMO_SMOKE)/metrics.csv) -eq 10 || { echo "test-demo: metrics.csv should hold 3 runs x 3 steps"; exit 1; }
	@echo "test-demo: outputs produced"

# -------------------------------------------------------------------- reliability ---
# Tests/reliability/*.c against the installed library (docs/RELIABILITY.md):
#   abi           status values, metric indices, controller codes, struct sizes and
#                 offsets, function types pinned (C and C++)
#   badinputs     bad inputs per entry point and the status each returns, under ASan/UBSan;
#                 its log must reproduce the table committed in docs/RELIABILITY.md
#   stress        8 threads x 10^4 calls on distinct handles equal the single-threaded
#                 results; 8 threads sharing one handle of each kind; under ASan/UBSan
#   leaks         10^4 cycles of every handle: no leak under LeakSanitizer, and the same
#                 heap in use (mallinfo2, glibc's thread cache off) after 10^3 and 10^4
#   determinism   bit-identical for every library thread count and batch split, and
#                 across two runs; reports whether OPENBLAS_NUM_THREADS changes the fused head
REL := $(BUILD)/reliability
REL_LIBS = $$($(PKG) --cflags --libs aepo) -lm -lpthread -Wl,-rpath,$(STAGE)/lib
REL_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all
REL_SRC := $(wildcard Tests/reliability/*.c Tests/reliability/*.h) Tests/c/smoke.h

test-reliability: stage
	@mkdir -p $(REL)
	@set -e; \
	  $(CC) -std=c99 $(CWARN) Tests/reliability/abi.c -o $(REL)/abi $(REL_LIBS); \
	  $(CXX) -x c++ -std=c++11 $(CWARN) Tests/reliability/abi.c -o $(REL)/abi.cxx $(REL_LIBS); \
	  for p in badinputs stress leaks determinism; do \
	    $(CC) -std=c99 $(CWARN) -O1 -g Tests/reliability/$$p.c -o $(REL)/$$p $(REL_LIBS); \
	    $(CC) -std=c99 $(CWARN) -O1 -g $(REL_SAN) Tests/reliability/$$p.c -o $(REL)/$$p.san $(REL_LIBS); \
	  done; \
	  $(REL)/abi; $(REL)/abi.cxx > /dev/null; \
	  ASAN_OPTIONS=detect_leaks=1 $(REL)/badinputs.san --log $(REL)/badinputs.jsonl; \
	  python3 scripts/reliability_table.py $(REL)/badinputs.jsonl docs/RELIABILITY.md --check; \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(REL)/stress.san; \
	  GLIBC_TUNABLES=glibc.malloc.tcache_count=0 $(REL)/leaks --cycles 10000 --heap-check; \
	  ASAN_OPTIONS=detect_leaks=1:malloc_context_size=4 $(REL)/leaks.san --cycles 10000 | sed 's/^/LeakSanitizer: /'; \
	  $(REL)/determinism.san > $(REL)/determinism.1; \
	  $(REL)/determinism > $(REL)/determinism.2; \
	  grep -v digest $(REL)/determinism.1; \
	  cmp -s <(grep digest $(REL)/determinism.1) <(grep digest $(REL)/determinism.2) || \
	    { echo "determinism: two runs gave different results"; exit 1; }; \
	  echo "determinism: two runs gave the same digest ($$(grep '^digest' $(REL)/determinism.1))"; \
	  b1=$$(OPENBLAS_NUM_THREADS=1 $(REL)/determinism | grep blas-digest); \
	  b2=$$(OPENBLAS_NUM_THREADS=2 $(REL)/determinism | grep blas-digest); \
	  if [ "$$b1" = "$$b2" ]; then echo "determinism: fused head identical with OPENBLAS_NUM_THREADS 1 and 2"; \
	  else echo "determinism: fused head differs between OPENBLAS_NUM_THREADS 1 and 2 (OpenBLAS rounds differently; documented, not promised)"; fi

# Regenerates the bad-input table of docs/RELIABILITY.md from the library's answers.
reliability-table: stage
	@mkdir -p $(REL)
	@$(CC) -std=c99 $(CWARN) -O1 -g Tests/reliability/badinputs.c -o $(REL)/badinputs $(REL_LIBS)
	@$(REL)/badinputs --log $(REL)/badinputs.jsonl
	@python3 scripts/reliability_table.py $(REL)/badinputs.jsonl docs/RELIABILITY.md --write

# The leak run under valgrind (slow: .ci/run only). Definite or indirect leaks fail it.
LEAK_CYCLES ?= 1000
leak-valgrind: stage
	@scripts/deps.sh valgrind
	@mkdir -p $(REL)
	@$(CC) -std=c99 $(CWARN) -O1 -g Tests/reliability/leaks.c -o $(REL)/leaks $(REL_LIBS)
	@rc=0; valgrind --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
	  --error-exitcode=3 $(REL)/leaks --cycles $(LEAK_CYCLES) > $(REL)/valgrind.log 2>&1 || rc=$$?; \
	  grep -E "leaks:|definitely lost|indirectly lost|possibly lost|ERROR SUMMARY" $(REL)/valgrind.log | sed 's/^==[0-9]*== *//'; \
	  [ $$rc -eq 0 ] || { echo "leak-valgrind: FAILED (exit $$rc), see $(REL)/valgrind.log"; exit $$rc; }

# The stress program against a copy of the library built with -sanitize=thread (.ci/run
# only: a second Swift build). Any data race ThreadSanitizer sees fails it. OpenBLAS's own
# pool is not instrumented (its spin-wait hand-off would read as races), so it runs with
# OPENBLAS_NUM_THREADS=1; the library's pthreads and the callers' threads are all checked.
TSAN_SCRATCH := .build-tsan
TSAN_OBJ_DIRS := $(addprefix $(TSAN_SCRATCH)/release/,AepoCore.build AepoConfig.build AepoShim.build CAepoKernels.build)
tsan: deps
	swift build -c release --target AepoShim --scratch-path $(TSAN_SCRATCH) -Xswiftc -sanitize=thread \
	  -Xcc -fsanitize=thread
	@mkdir -p $(BUILD)/tsan
	$(FUZZ_CC) -std=c99 $(CWARN) -g -O1 -fsanitize=thread -Iinclude -c Tests/reliability/stress.c -o $(BUILD)/tsan/stress.o
	swiftc -use-ld=lld -sanitize=thread $(BUILD)/tsan/stress.o $$(find $(TSAN_OBJ_DIRS) -name '*.o') \
	  $$(pkg-config --libs jansson openblas) -o $(BUILD)/tsan/stress
	OPENBLAS_NUM_THREADS=1 SWIFT_BACKTRACE=enable=no TSAN_OPTIONS=halt_on_error=1 $(BUILD)/tsan/stress --calls 2000
	@echo "tsan: no data race in the stress run"

# ------------------------------------------------------------------------ fuzzing ---
# libFuzzer harnesses (Tests/fuzz/fuzz_*.c) linked against a copy of the Swift code built
# with -sanitize=fuzzer,address in its own scratch path, so that the fuzzer sees the
# library's branches and AddressSanitizer sees its memory. Nothing of this reaches the
# shipped library. `make test` replays the committed corpus and the crash regressions
# through the same harnesses against the installed library (test-fuzz).
FUZZERS := config loss kernels sampler controller fused
FUZZ_SCRATCH := .build-fuzz
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 2
SWIFT_BIN := $(dir $(realpath $(shell command -v swiftc)))
FUZZ_CC := $(SWIFT_BIN)clang
FUZZ_SAN := -sanitize=fuzzer,address
FUZZ_OBJ_DIRS := $(addprefix $(FUZZ_SCRATCH)/release/,AepoCore.build AepoConfig.build AepoShim.build CAepoKernels.build)

$(FUZZ_DIR)/swift.stamp: $(SOURCES) | deps
	swift build -c release --target AepoShim --scratch-path $(FUZZ_SCRATCH) \
	  -Xswiftc $(FUZZ_SAN) -Xswiftc -parse-as-library -Xcc -fsanitize=fuzzer-no-link,address
	@mkdir -p $(FUZZ_DIR) && touch $@

$(FUZZ_DIR)/fuzz_%: Tests/fuzz/fuzz_%.c Tests/fuzz/fuzz.h include/aepo.h $(FUZZ_DIR)/swift.stamp
	$(FUZZ_CC) -std=c99 $(CWARN) -g -O1 -fsanitize=fuzzer-no-link,address -Iinclude -c $< -o $@.o
	swiftc -use-ld=lld $(FUZZ_SAN) $@.o $$(find $(FUZZ_OBJ_DIRS) -name '*.o') \
	  $$(pkg-config --libs jansson openblas) -o $@

fuzz-build: $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZERS))

# Fuzzes each harness for FUZZ_SECONDS, FUZZ_JOBS at a time. New inputs go to
# build/fuzz/work/<name>, crashes to build/fuzz/artifacts/; the committed corpus is only read.
fuzz: fuzz-build
	@scripts/fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZERS)

# Replays Tests/fuzz/corpus and Tests/fuzz/regressions through every harness, built with a
# plain main() against the installed library under ASan/UBSan, and checks that the config
# corpus reaches every documented kind of config error.
REPLAY_DIR := $(BUILD)/replay
test-fuzz: stage
	@mkdir -p $(REPLAY_DIR)
	@set -e; for f in $(FUZZERS); do \
	  $(CC) -std=c99 $(CWARN) -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
	    Tests/fuzz/fuzz_$$f.c Tests/fuzz/replay_main.c -o $(REPLAY_DIR)/replay_$$f \
	    $$($(PKG) --cflags --libs aepo) -lm -Wl,-rpath,$(STAGE)/lib; \
	  dirs=Tests/fuzz/corpus/$$f; test -d Tests/fuzz/regressions/$$f && dirs="$$dirs Tests/fuzz/regressions/$$f"; \
	  ASAN_OPTIONS=detect_leaks=1 $(REPLAY_DIR)/replay_$$f $$dirs; \
	done
	@python3 scripts/config_error_kinds.py $(STAGE)/lib/$(REAL_SO) Tests/fuzz/corpus/config

clean:
	rm -rf $(BUILD) $(STATIC_SCRATCH) $(FUZZ_SCRATCH) $(TSAN_SCRATCH) .build Tests/c/bin
