# libaepo build, install, test, bench and demo.
#   make                 build build/lib/libaepo.so (static Swift stdlib, SONAME libaepo.so.0)
#   make install PREFIX=/usr/local
#   make test            Swift unit tests, C smoke tests (plain, C++, ASan/UBSan), pytest,
#                        the C example trainer (plain and ASan/UBSan)
#   make bench           speed table against numpy / PyTorch, also bench/results.json
#   make demo            a short training run showing entropy control
#   make example         the C example trainer, build/example/aepo_train, against the staged install
# Set-up (apt packages, the Python virtualenv under ~/.cache/libaepo) happens on demand.

SHELL := /bin/bash
VERSION := 0.1.0
ABI := 0
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

.PHONY: all lib deps venv install stage test test-swift test-c test-python test-demo \
        test-example example check-exports bench demo clean

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

test: deps lib test-swift stage check-exports test-c test-python test-demo test-example
	@echo "make test: all suites passed"

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

clean:
	rm -rf $(BUILD) $(STATIC_SCRATCH) .build Tests/c/bin
