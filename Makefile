# Builds the engine library (build/libsd.a, build/libsd.so.*), the command-line tools (bin/), the
# tests and the benchmarks, and installs the library like any other.
#   make            the static and shared library + the tools
#   make test       the test suite (the README's test command); ends with "N passed, N failed".
#                   Builds the tests and the benchmark programs (not run) first, so every build
#                   flavour below keeps them compiling warning-free
#   make test-asan  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-isa   the suite again at each instruction set level below this CPU's best
#                   (SD_KERNEL_ISA=avx2, generic): every level must give the same results
#   make test-clang the library, tools and suite built with clang (build-clang/)
#   make cross-aarch64  the library, tools, tests and benchmarks for aarch64 Linux (build-aarch64/)
#                   with aarch64-linux-gnu-gcc (AARCH64_CC) and Debian's arm64 -dev packages
#   make test-aarch64  kernel, cross-ISA and tiny-pipeline tests and the regression goldens of
#                   that build under qemu-aarch64 (one thread; AARCH64_TESTS picks the tests)
#   make test-full  full-size model checks (tests/full_*.c; minutes, tens of GB of disk)
#   make build-tests / build-bench   build the test / benchmark programs without running them
#   make bench-kernels  kernel micro-benchmark (GFLOP/s and % of the measured FMA peak); not a test
#   make bench      whole SD 1.5 model at 512x512 (random weights written once to $(SD_BENCH_CACHE));
#                   BENCH_ARGS="--threads 2 --runs 5" passes options to build/bench/sd_bench;
#                   the tiny autoencoder at 512x512 (build/bench/tiny_vae_bench);
#                   then bench-memory's whole-run rows (BENCH_MEM_ROWS)
#   make bench-memory  peak RSS of whole runs through bin/gen and bin/vae-check against issue 19's
#                   goals (fp16 SD 1.5, SDXL, SD3-medium models written once to $(SD_BENCH_CACHE);
#                   FLUX.1-schnell's 34 GB only when BENCH_MEM_ARGS names flux-1024), and a Q8_0
#                   GGUF of the SD 1.5 UNet by build/bench/make_gguf; BENCH_MEM_ARGS passes options
#   make install    PREFIX=/usr/local DESTDIR= : lib/libsd.so.$(SD_VERSION) and its links,
#                   lib/libsd.a, include/sd.h, lib/pkgconfig/sd.pc, the tools in bin/, the
#                   bundled configs in share/sd/configs (symbolic links kept);
#                   LIBDIR, INCLUDEDIR, PKGCONFIGDIR, TOOLDIR, CONFIGSDIR override single folders
#   make uninstall  removes exactly what make install put (same PREFIX, DESTDIR, ...)
#   make check-install  installs into a temporary folder, builds samples/embed.c against it
#                   through pkg-config (shared and static), runs it, checks the header and the
#                   exported symbols, uninstalls (tests/check_install.sh)
#   make check-version  the Makefile's version is include/sd.h's SD_VERSION
#   make fuzz       builds the libFuzzer harnesses of tests/fuzz/ with clang (build-fuzz/) and runs
#                   each for FUZZ_SECONDS (default 20) from its committed corpus; any crash, leak,
#                   sanitizer report or timeout fails it. New inputs go to build-fuzz/corpus/
#   make clean
CC ?= gcc
BUILD ?= build
BINDIR ?= bin
OPT ?= -O2 -g
SAN ?=
CPPFLAGS += -D_GNU_SOURCE -I/usr/include/cjson
# -ffp-contract=off: no compiler fuses a * b + c on its own (clang would where a function's target
# has FMA), so gcc and clang builds round alike; the kernels fuse explicitly where they mean to.
CFLAGS += -std=c11 $(OPT) $(SAN) -fopenmp -ffp-contract=off -Wall -Wextra -MMD -MP
LDFLAGS += $(SAN) -fopenmp
# What the library itself needs (libsd.so records them); the tools and tests link the same.
# zlib: the bundled T5 tokenizer's tokenizer.json.gz (text_encoder/t5_tokenizer_load.c); libpng
# depends on it already, so every machine that builds this has it (libpng-dev pulls zlib1g-dev).
LDLIBS += -lcjson -lpng -ljpeg -lz -lm

# macOS (written from Apple's and Homebrew's documentation; not built or run by this project's
# CI): Apple's clang, with OpenMP from Homebrew's libomp (Apple's clang takes -fopenmp only
# through -Xpreprocessor and does not know where libomp is), the libraries from Homebrew
# (brew install libomp cjson libpng jpeg-turbo libmicrohttpd openblas), a shared library named
# by -install_name instead of a soname. The library, tools and tests are meant to build; sd_bench
# and rss_bench count allocations through GNU ld's --wrap, which Apple's linker lacks, so they do
# not (bench/kernels does). bigalloc.c's MADV_HUGEPAGE is asked for only where defined; cpu.c needs no HWCAP there.
ifeq ($(shell uname -s),Darwin)
ifeq ($(origin CC),default)
CC := clang
endif
BREW ?= $(shell brew --prefix 2>/dev/null)
LIBOMP ?= $(shell brew --prefix libomp 2>/dev/null)
CPPFLAGS += -I$(BREW)/include -I$(BREW)/include/cjson -I$(LIBOMP)/include
CFLAGS := $(subst -fopenmp,-Xpreprocessor -fopenmp,$(CFLAGS))
LDFLAGS := $(subst -fopenmp,,$(LDFLAGS)) -L$(BREW)/lib -L$(LIBOMP)/lib -L$(BREW)/opt/openblas/lib
LDLIBS += -lomp
DARWIN := 1
endif

# The one place the version lives: the shared library's file name and soname, sd.pc's Version.
# include/sd.h's SD_VERSION must say the same (make check-version, run by make test).
SD_VERSION_MAJOR := 0
SD_VERSION_MINOR := 2
SD_VERSION_PATCH := 0
SD_VERSION := $(SD_VERSION_MAJOR).$(SD_VERSION_MINOR).$(SD_VERSION_PATCH)

# Install locations. DESTDIR stages the whole tree elsewhere (packaging); sd.pc keeps PREFIX's paths.
PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
TOOLDIR ?= $(PREFIX)/bin
INSTALL ?= install

DATADIR ?= $(PREFIX)/share
CONFIGSDIR ?= $(DATADIR)/sd/configs

# Where the library finds the bundled configs of single-file checkpoints when none was set
# (sd_set_configs_dir) and none lies beside the installed program or library
# (<prefix>/share/sd/configs): the install path, then the source tree's (pipeline/configs_dir.c).
SD_CONFIGS_DIR ?= $(abspath configs)
$(BUILD)/pipeline/configs_dir.o: CPPFLAGS += -DSD_CONFIGS_DIR='"$(SD_CONFIGS_DIR)"' \
    -DSD_CONFIGS_INSTALL_DIR='"$(CONFIGSDIR)"'

SRC_DIRS := core kernels nn text_encoder unet vae schedulers pipeline dit convert
LIB_SRC := $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
# One set of objects makes both libraries: position-independent for the shared one, and every
# symbol hidden unless include/sd.h marks it SD_API, so libsd.so exports the public API only.
# The static archive keeps every symbol linkable (visibility only matters to the dynamic linker):
# the tools, tests and benchmarks link libsd.a because they call internals (loaders, kernels,
# safetensors, image I/O) as well as the API.
$(LIB_OBJ): CFLAGS += -fPIC -fvisibility=hidden
LIB := $(BUILD)/libsd.a
SONAME := libsd.so.$(SD_VERSION_MAJOR)
SHLIB := $(BUILD)/libsd.so.$(SD_VERSION)
SHLIB_LINKS := $(BUILD)/$(SONAME) $(BUILD)/libsd.so
# OpenMP runtime that libsd.a needs when a program links it (sd.pc's Libs.private): the one this
# compiler's -fopenmp links (gcc: libgomp; clang: its libomp, which gcc cannot find by name, so a
# clang-built libsd.a says -fopenmp and wants clang for the final link).
OPENMP_LIBS ?= $(if $(findstring clang,$(shell $(CC) --version 2>/dev/null)),-fopenmp,-lgomp)
# Undefined symbols are link errors for the shared library (a dependency missing from its link
# would otherwise surface only in the programs using it); not under sanitizers, whose runtimes
# clang leaves to the executable.
SHLIB_DEFS := $(if $(SAN),,-Wl,--no-undefined)
SHLIB_NAME_FLAG = -Wl,-soname,$(SONAME)
ifdef DARWIN
SHLIB_DEFS := $(if $(SAN),,-Wl,-undefined,error)
SHLIB_NAME_FLAG = -Wl,-install_name,@rpath/$(SONAME)
endif

CLI_SRC := $(wildcard cli/*.c)
BINS := $(CLI_SRC:cli/%.c=$(BINDIR)/%)
# Option parsing and helpers shared by the tools.
CLI_COMMON_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/common/*.c))
CLI_LIB := $(BUILD)/libsdcli.a

# sd-server (server/): the HTTP service on the public API; libmicrohttpd does the HTTP. Its objects
# but main.c form an archive the unit test links too; the web page is compiled in (tools/embed.c
# turns each server/web file into a C array).
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o) $(BUILD)/server/embed/index.html.o
SERVER_LIB := $(BUILD)/libsdserver.a
SERVER_BIN := $(BINDIR)/sd-server
SERVER_LDLIBS := -lmicrohttpd
EMBED := $(BUILD)/tools/embed
# tools/embed runs during the build, so a cross build compiles it for this machine.
HOST_CC ?= $(CC)

TEST_COMMON := $(BUILD)/tests/common.o
TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Full-size models with random weights (minutes each, many GB of memory and /tmp): built with
# the tests, run only by `make test-full`.
FULL_SRC := $(wildcard tests/full_*.c)
FULLS := $(FULL_SRC:tests/%.c=$(BUILD)/tests/%)

# The benchmarks link OpenBLAS (bench/kernels.c times cblas_sgemm next to ours); the library and
# the tools do not.
BENCH_LDLIBS := -lopenblas $(LDLIBS)
BENCH_KERNELS := $(BUILD)/bench/kernels
# The whole-model benchmark and the tool writing its random-weight model. The benchmark counts the
# engine's allocations through the linker's --wrap (bench/sysinfo.c).
BENCH_SD := $(BUILD)/bench/sd_bench
BENCH_SD_OBJ := $(patsubst %,$(BUILD)/bench/%.o,sd_bench flops sysinfo peak)
BENCH_MAKE_MODEL := $(BUILD)/bench/make_model
BENCH_MAKE_GGUF := $(BUILD)/bench/make_gguf
# Peak RSS of the tools run as child processes (bench/rss_bench.c).
BENCH_RSS := $(BUILD)/bench/rss_bench
BENCH_RSS_OBJ := $(patsubst %,$(BUILD)/bench/%.o,rss_bench sysinfo)
# The tiny autoencoder's decode and encode at 512x512 (bench/tiny_vae_bench.c).
BENCH_TINY := $(BUILD)/bench/tiny_vae_bench
BENCHES := $(BENCH_KERNELS) $(BENCH_SD) $(BENCH_MAKE_MODEL) $(BENCH_RSS) $(BENCH_MAKE_GGUF) $(BENCH_TINY)
BENCH_MEM_ARGS ?=
# make bench's memory rows: the SD 1.5 and SDXL whole runs. The 2048x2048 tiled VAE decode takes
# most of an hour on 2 cores and SD3-medium about ten minutes, so they run only under make
# bench-memory.
BENCH_MEM_ROWS ?= sd15-512,sd15-512-3step,sd15-512-resident,sd15-512-q8_0,sd15-512-wq8_0,sdxl-1024,sdxl-1024-resident
BENCH_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,--wrap=posix_memalign
SD_BENCH_CACHE ?= bench/cache
BENCH_DTYPE ?= f32
BENCH_MODEL := $(SD_BENCH_CACHE)/sd15-$(BENCH_DTYPE)
BENCH_ARGS ?=

.PHONY: fuzz fuzz-build
.PHONY: all lib build-tests build-bench test test-asan test-isa test-clang test-full clean \
    bench-kernels bench bench-memory check-version print-version install uninstall check-install
all: lib $(BINS) $(SERVER_BIN)
lib: $(LIB) $(SHLIB) $(SHLIB_LINKS)
build-tests: $(TESTS) $(FULLS)
build-bench: $(BENCHES)

# Objects remember the flags they were compiled with: when they change (another OPT or SAN, the
# library's -fPIC), everything is rebuilt instead of linking stale objects with new ones (a
# non-PIC object in libsd.so is a link error). The stamp is rewritten only when the flags differ.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CC) $(CPPFLAGS) $(CFLAGS)
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@
.PHONY: FORCE
FORCE:

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SHLIB): $(LIB_OBJ)
	$(CC) -shared $(SHLIB_NAME_FLAG) $(SHLIB_DEFS) $(LDFLAGS) $^ $(LDLIBS) -o $@

# libsd.so.0 is what programs load (the soname); libsd.so is what -lsd finds at link time.
$(SHLIB_LINKS): $(SHLIB)
	ln -sf $(notdir $(SHLIB)) $@

$(CLI_LIB): $(CLI_COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BINDIR)/%: $(BUILD)/cli/%.o $(CLI_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(CLI_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(EMBED): tools/embed.c
	@mkdir -p $(dir $@)
	$(HOST_CC) $(CFLAGS) $< -o $@

$(BUILD)/server/embed/%.c: server/web/% $(EMBED)
	@mkdir -p $(dir $@)
	$(EMBED) srv_embed_$(subst -,_,$(subst .,_,$*)) < $< > $@.tmp && mv $@.tmp $@

$(BUILD)/server/embed/%.o: $(BUILD)/server/embed/%.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(SERVER_LIB): $(SERVER_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SERVER_BIN): $(BUILD)/server/main.o $(SERVER_LIB) $(CLI_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(SERVER_LDLIBS) -o $@

$(BUILD)/tests/test_server: $(BUILD)/tests/test_server.o $(TEST_COMMON) $(SERVER_LIB) $(CLI_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(SERVER_LDLIBS) -o $@

# So does the FLUX transformer-file test (tests/bfl_writer.c; an SD file as a wrong input).
$(BUILD)/tests/test_flux_bfl $(BUILD)/tests/test_flux_files: $(BUILD)/tests/bfl_writer.o $(BUILD)/tests/ldm_writer.o
# Reduced-precision contracts over the recorded runs (tests/precision_runs.c).
$(BUILD)/tests/test_pipeline_bf16 $(BUILD)/tests/test_pipeline_int8 $(BUILD)/tests/full_pipeline_bf16: $(BUILD)/tests/precision_runs.o
# Files checked against recorded tensor manifests (tests/manifest.c).
$(BUILD)/tests/test_flux_bfl $(BUILD)/tests/test_sd3_file $(BUILD)/tests/test_file_refs: $(BUILD)/tests/manifest.o
# The FLUX LoRA and LoRA-switch tests apply LoRAs to a BFL transformer file too (the switch
# test to a single-file SD checkpoint as well).
$(BUILD)/tests/test_lora_flux $(BUILD)/tests/test_lora_switch: $(BUILD)/tests/bfl_writer.o
$(BUILD)/tests/test_lora_switch: $(BUILD)/tests/ldm_writer.o
# The GGUF tests write their files with tests/gguf_writer.c (and FLUX's in BFL names).
$(BUILD)/tests/test_gguf: $(BUILD)/tests/gguf_writer.o
$(BUILD)/tests/test_limits: $(BUILD)/tests/gguf_writer.o
$(BUILD)/tests/test_gguf_files: $(BUILD)/tests/gguf_writer.o $(BUILD)/tests/bfl_writer.o $(BUILD)/tests/ldm_writer.o
# The single-file and component tests write their checkpoints with an independent converter (tests/ldm_writer.c).
$(BUILD)/tests/test_single_file $(BUILD)/tests/test_components $(BUILD)/tests/test_file_refs: $(BUILD)/tests/ldm_writer.o
# The SD3 single-file test writes Stability's layout with its own writer (tests/sd3_writer.c).
$(BUILD)/tests/test_sd3_file: $(BUILD)/tests/sd3_writer.o $(BUILD)/tests/ldm_writer.o

# The fuzz harnesses replayed in the normal build (tests/test_fuzz_regress.c): each harness
# compiled with its libFuzzer entry point renamed fuzz_entry_<name>, so they link together.
FUZZ_ENTRY_OBJ := $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/tests/fuzz/entry_%.o,$(filter-out tests/fuzz/fuzz_util.c,$(wildcard tests/fuzz/fuzz_*.c)))
$(BUILD)/tests/fuzz/entry_%.o: tests/fuzz/fuzz_%.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DLLVMFuzzerTestOneInput=fuzz_entry_$* -c $< -o $@
$(BUILD)/tests/test_fuzz_regress: $(BUILD)/tests/test_fuzz_regress.o $(TEST_COMMON) $(FUZZ_ENTRY_OBJ) \
    $(BUILD)/tests/fuzz/fuzz_util.o $(SERVER_LIB) $(CLI_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(SERVER_LDLIBS) -o $@

$(BENCH_KERNELS): $(BUILD)/bench/kernels.o $(BUILD)/bench/model.o $(BUILD)/bench/peak.o $(BUILD)/bench/gguf.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(BENCH_LDLIBS) -o $@

bench-kernels: $(BENCH_KERNELS)
	$(BENCH_KERNELS)

$(BENCH_SD): $(BENCH_SD_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(BENCH_WRAP) $^ $(BENCH_LDLIBS) -o $@

# GGUF files of the benchmark models (bench/make_gguf.c, through the tests' GGUF writer).
$(BENCH_MAKE_GGUF): $(BUILD)/bench/make_gguf.o $(BUILD)/tests/gguf_writer.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH_MAKE_MODEL): $(BUILD)/bench/make_model.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(BENCH_LDLIBS) -o $@

$(BENCH_RSS): $(BENCH_RSS_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(BENCH_WRAP) $^ $(BENCH_LDLIBS) -o $@

$(BENCH_TINY): $(BUILD)/bench/tiny_vae_bench.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(BENCH_LDLIBS) -o $@

bench: $(BENCH_SD) $(BENCH_MAKE_MODEL) $(BENCH_TINY)
	@mkdir -p $(SD_BENCH_CACHE)
	$(BENCH_MAKE_MODEL) bench/models/sd15 $(BENCH_MODEL) --dtype $(BENCH_DTYPE)
	$(BENCH_SD) $(BENCH_MODEL) $(BENCH_ARGS)
	$(BENCH_TINY) --cache $(SD_BENCH_CACHE)
	$(MAKE) --no-print-directory bench-memory BENCH_MEM_ARGS="--only $(BENCH_MEM_ROWS) $(BENCH_MEM_ARGS)"


bench-memory: $(BENCH_RSS) $(BENCH_MAKE_MODEL) $(BENCH_MAKE_GGUF) $(BINDIR)/gen $(BINDIR)/vae-check
	@mkdir -p $(SD_BENCH_CACHE)
	$(BENCH_MAKE_MODEL) bench/models/sd15 $(SD_BENCH_CACHE)/sd15-f16 --dtype f16
	test -f $(SD_BENCH_CACHE)/sd15-unet-q8_0.gguf || $(BENCH_MAKE_GGUF) \
	    $(SD_BENCH_CACHE)/sd15-f16/unet/diffusion_pytorch_model.safetensors $(SD_BENCH_CACHE)/sd15-unet-q8_0.gguf
	$(BENCH_MAKE_MODEL) bench/models/sdxl $(SD_BENCH_CACHE)/sdxl-f16 --dtype f16
	$(BENCH_MAKE_MODEL) bench/models/sd3-medium $(SD_BENCH_CACHE)/sd3m-f16 --dtype f16
	$(if $(findstring flux,$(BENCH_MEM_ARGS)),$(BENCH_MAKE_MODEL) bench/models/flux1-schnell \
	    $(SD_BENCH_CACHE)/flux-schnell-bf16 --dtype bf16)
	$(BENCH_RSS) --cache $(SD_BENCH_CACHE) --bin $(BINDIR) $(if $(findstring flux,$(BENCH_MEM_ARGS)),--max-mb 0) \
	    $(BENCH_MEM_ARGS)

# SD_VERSION as the preprocessor expands it, so the check holds however sd.h spells the macro.
check-version:
	@v=$$(printf '#include "sd.h"\nSD_VERSION\n' | $(CC) $(CPPFLAGS) -Iinclude -E -P -x c - | tail -n 1); \
	if [ "$$v" != '"$(SD_VERSION)"' ]; then \
	    echo "version mismatch: Makefile SD_VERSION $(SD_VERSION), include/sd.h SD_VERSION $$v"; exit 1; \
	fi

test: all build-tests build-bench check-version
	@tests/run.sh $(BUILD)/tests $(BINDIR)

test-isa: all build-tests
	@for isa in $$(tests/isa_levels.sh --below-best); do \
	    echo "=== SD_KERNEL_ISA=$$isa"; SD_KERNEL_ISA=$$isa tests/run.sh $(BUILD)/tests $(BINDIR) || exit 1; \
	done

test-clang:
	$(MAKE) CC=clang BUILD=build-clang BINDIR=build-clang/bin test

# aarch64 from this x86 machine: cross-built with Debian's gcc-aarch64-linux-gnu against the arm64
# -dev packages (multiarch), run under qemu-user. Emulated runs keep to one thread: creating a
# thread under qemu-aarch64 never returns on these machines, so OMP_THREAD_LIMIT=1 caps every
# OpenMP team (explicit num_threads included) and the tests and tools that start threads of their
# own (test_threads, sd-server and its test) are not run. OPENBLAS_CORETYPE skips
# OpenBLAS's CPU probe, which hangs under qemu (only the benchmarks link it). Tests that run the
# tools as child processes cannot exec an aarch64 binary from qemu without binfmt, so the pipelines
# and the regression goldens are checked by running the tools themselves, below.
AARCH64_CC ?= aarch64-linux-gnu-gcc
AARCH64_BUILD := build-aarch64
QEMU_AARCH64 ?= qemu-aarch64 -L /usr/aarch64-linux-gnu
AARCH64_ENV = OMP_NUM_THREADS=1 OMP_THREAD_LIMIT=1 OPENBLAS_CORETYPE=ARMV8 \
    SD_TEST_PIPELINE_RUNS=$(AARCH64_PIPELINE_RUNS)
# Kernel tests (every level this CPU runs: neon and generic), the cross-ISA comparison, and the
# sd15-tiny and sd3-tiny pipelines against the diffusers fixtures, then the regression goldens
# recorded on x86, which must hold byte for byte. Emulation is slow (half a minute per 128x128
# run), so a few of test_pipeline's runs and of the goldens; an empty AARCH64_PIPELINE_RUNS or
# AARCH64_REGRESS_ONLY runs them all (about 9 and 5 minutes).
AARCH64_TESTS ?= test_kernels test_norm_act test_attention test_cross_isa test_pipeline \
    test_pipeline_sd3
AARCH64_PIPELINE_RUNS ?= sd15-tiny/euler,sd2v-tiny/dpmpp2m_v
AARCH64_REGRESS_ONLY ?= sd15-euler-a sd15-unipc-wide sd2v-euler-zsnr
.PHONY: cross-aarch64 test-aarch64
cross-aarch64:
	$(MAKE) CC=$(AARCH64_CC) HOST_CC=gcc BUILD=$(AARCH64_BUILD) BINDIR=$(AARCH64_BUILD)/bin all build-tests build-bench

test-aarch64: cross-aarch64
	@failed=""; for t in $(AARCH64_TESTS); do \
	    echo "== $$t (qemu-aarch64)"; start=$$(date +%s); \
	    $(AARCH64_ENV) SD_BIN_DIR=$(AARCH64_BUILD)/bin $(QEMU_AARCH64) $(AARCH64_BUILD)/tests/$$t \
	        > $(AARCH64_BUILD)/tests/$$t.log 2>&1 || failed="$$failed $$t"; \
	    grep '^FAIL' $(AARCH64_BUILD)/tests/$$t.log; tail -n 1 $(AARCH64_BUILD)/tests/$$t.log; echo "   $$(( $$(date +%s) - start )) s"; \
	done; \
	echo "== sd-regress check tests/regress/manifest.json (qemu-aarch64)"; start=$$(date +%s); \
	$(AARCH64_ENV) $(QEMU_AARCH64) $(AARCH64_BUILD)/bin/sd-regress check tests/regress/manifest.json \
	    $(foreach c,$(AARCH64_REGRESS_ONLY),--only $(c)) --threads 1 --out $(AARCH64_BUILD)/tests/regress-failures || failed="$$failed sd-regress"; \
	echo "   $$(( $$(date +%s) - start )) s"; \
	if [ -n "$$failed" ]; then echo "test-aarch64 FAILED:$$failed (logs in $(AARCH64_BUILD)/tests/)"; exit 1; fi; \
	echo "test-aarch64: all passed under qemu-aarch64"

test-full: $(FULLS)
	@failed=0; for t in $(FULLS); do echo "== $$(basename $$t)"; $$t || failed=1; done; exit $$failed

# Sanitizers slow everything down ~3x; the suite is sized so this stays in minutes.
test-asan:
	$(MAKE) BUILD=build-asan BINDIR=build-asan/bin OPT="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" test

# libFuzzer harnesses (tests/fuzz/fuzz_*.c): the library and server objects are built by clang
# with coverage instrumentation and ASan + UBSan (-fsanitize=fuzzer-no-link), each harness linked
# with libFuzzer's main. The committed corpus is only read; what a run finds lands in
# build-fuzz/corpus/<harness>/ (copy an input worth keeping into tests/fuzz/corpus/ by hand).
FUZZ_SECONDS ?= 20
FUZZ_BUILD := build-fuzz
FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(filter-out tests/fuzz/fuzz_util.c,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BINS := $(FUZZ_NAMES:%=$(BUILD)/fuzz/%)
FUZZ_UTIL_OBJ := $(BUILD)/tests/fuzz/fuzz_util.o
$(FUZZ_UTIL_OBJ): CPPFLAGS += -DFUZZ_ROOT='"$(abspath .)"'
# Each harness's flags: -timeout per input, a memory cap that a decompression bomb would cross.
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1

$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_UTIL_OBJ) $(SERVER_LIB) $(CLI_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) $(SERVER_LDLIBS) -o $@

fuzz-build:
	$(MAKE) CC=clang BUILD=$(FUZZ_BUILD) BINDIR=$(FUZZ_BUILD)/bin OPT="-O1 -g" SAN="$(FUZZ_SAN)" \
	    $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz/%)

fuzz: fuzz-build
	@failed=""; for h in $(FUZZ_NAMES); do \
	    echo "=== fuzz $$h ($(FUZZ_SECONDS) s)"; mkdir -p $(FUZZ_BUILD)/corpus/$$h; \
	    dict=""; [ -f tests/fuzz/$$h.dict ] && dict="-dict=tests/fuzz/$$h.dict"; \
	    $(FUZZ_BUILD)/fuzz/$$h $(FUZZ_FLAGS) $$dict -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=$(FUZZ_BUILD)/$$h- $(FUZZ_BUILD)/corpus/$$h tests/fuzz/corpus/$$h \
	        > $(FUZZ_BUILD)/$$h.log 2>&1; rc=$$?; \
	    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' $(FUZZ_BUILD)/$$h.log; \
	    if [ $$rc -ne 0 ]; then tail -n 40 $(FUZZ_BUILD)/$$h.log; failed="$$failed $$h"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz FAILED:$$failed (logs and inputs in $(FUZZ_BUILD)/)"; exit 1; fi; \
	echo "fuzz: all $(words $(FUZZ_NAMES)) harnesses ran $(FUZZ_SECONDS) s clean"

# sd.pc carries PREFIX's paths (not DESTDIR's): generated at install time, so it always matches
# the PREFIX / LIBDIR / INCLUDEDIR of this install.
INSTALLED_TOOLS := $(notdir $(BINS) $(SERVER_BIN))
install: all
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	    -e 's|@VERSION@|$(SD_VERSION)|g' -e 's|@OPENMP_LIBS@|$(OPENMP_LIBS)|g' sd.pc.in > $(BUILD)/sd.pc
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(TOOLDIR)
	$(INSTALL) -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(SHLIB)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(notdir $(SHLIB)) $(DESTDIR)$(LIBDIR)/libsd.so
	$(INSTALL) -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 644 include/sd.h $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -m 644 $(BUILD)/sd.pc $(DESTDIR)$(PKGCONFIGDIR)/
	$(INSTALL) -m 755 $(BINS) $(SERVER_BIN) $(DESTDIR)$(TOOLDIR)/
	$(INSTALL) -d $(DESTDIR)$(CONFIGSDIR)
	cp -R -P -f configs/. $(DESTDIR)$(CONFIGSDIR)/

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(notdir $(SHLIB)) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	    $(DESTDIR)$(LIBDIR)/libsd.so $(DESTDIR)$(LIBDIR)/libsd.a $(DESTDIR)$(INCLUDEDIR)/sd.h \
	    $(DESTDIR)$(PKGCONFIGDIR)/sd.pc $(addprefix $(DESTDIR)$(TOOLDIR)/,$(INSTALLED_TOOLS))
	rm -rf $(DESTDIR)$(CONFIGSDIR)
	rmdir $(DESTDIR)$(DATADIR)/sd 2>/dev/null || true

check-install: all check-version
	MAKE="$(MAKE)" CC="$(CC)" BUILD="$(BUILD)" BINDIR="$(BINDIR)" tests/check_install.sh

print-version:
	@echo $(SD_VERSION)

clean:
	rm -rf build build-asan build-clang build-fuzz build-aarch64 bin

-include $(BUILD)/bench/kernels.d $(BUILD)/bench/model.d $(BUILD)/bench/peak.d $(BUILD)/bench/gguf.d \
    $(BUILD)/bench/make_gguf.d $(BENCH_SD_OBJ:.o=.d) \
    $(BUILD)/bench/make_model.d $(BUILD)/bench/rss_bench.d $(BUILD)/bench/tiny_vae_bench.d
-include $(LIB_OBJ:.o=.d) $(TESTS:=.d) $(FULLS:=.d) $(TEST_COMMON:.o=.d) $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.d) \
    $(CLI_COMMON_OBJ:.o=.d) $(SERVER_OBJ:.o=.d) $(BUILD)/server/main.d \
    $(FUZZ_ENTRY_OBJ:.o=.d) $(BUILD)/tests/fuzz/fuzz_util.d
