# Builds the engine library (build/libsd.a), the command-line tools (bin/) and the tests.
#   make            library + tools
#   make test       the test suite (the README's test command); ends with "N passed, N failed"
#   make test-asan  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-isa   the suite again at each instruction set level below this CPU's best
#                   (SD_KERNEL_ISA=avx2, generic): every level must give the same results
#   make test-clang the library, tools and suite built with clang (build-clang/)
#   make test-full  full-size model checks (tests/full_*.c; minutes, tens of GB of disk)
#   make bench-kernels  kernel micro-benchmark (GFLOP/s and % of the measured FMA peak); not a test
#   make bench      whole SD 1.5 model at 512x512 (random weights written once to $(SD_BENCH_CACHE));
#                   BENCH_ARGS="--threads 2 --runs 5" passes options to build/bench/sd_bench;
#                   then bench-memory's whole-run rows (BENCH_MEM_ROWS)
#   make bench-memory  peak RSS of whole runs through bin/gen and bin/vae-check (fp16 SD 1.5 and
#                   SDXL models written once to $(SD_BENCH_CACHE)); BENCH_MEM_ARGS passes options
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
LDLIBS += -lcjson -lpng -ljpeg -lm
# Only the kernel benchmark links OpenBLAS, to compare its GEMM with ours; the library needs none.
BENCH_BLAS_LIBS := -lopenblas

SRC_DIRS := core kernels nn text_encoder unet vae schedulers pipeline dit
LIB_SRC := $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libsd.a

CLI_SRC := $(wildcard cli/*.c)
BINS := $(CLI_SRC:cli/%.c=$(BINDIR)/%)
# Option parsing and helpers shared by the tools.
CLI_COMMON_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/common/*.c))
CLI_LIB := $(BUILD)/libsdcli.a

TEST_COMMON := $(BUILD)/tests/common.o
TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Full-size models with random weights (minutes each, many GB of memory and /tmp): built with
# everything, run only by `make test-full`.
FULL_SRC := $(wildcard tests/full_*.c)
FULLS := $(FULL_SRC:tests/%.c=$(BUILD)/tests/%)

BENCH_KERNELS := $(BUILD)/bench/kernels
# The whole-model benchmark and the tool writing its random-weight model. The benchmark counts the
# engine's allocations through the linker's --wrap (bench/sysinfo.c).
BENCH_SD := $(BUILD)/bench/sd_bench
BENCH_SD_OBJ := $(patsubst %,$(BUILD)/bench/%.o,sd_bench flops sysinfo peak)
BENCH_MAKE_MODEL := $(BUILD)/bench/make_model
# Peak RSS of the tools run as child processes (bench/rss_bench.c).
BENCH_RSS := $(BUILD)/bench/rss_bench
BENCH_RSS_OBJ := $(patsubst %,$(BUILD)/bench/%.o,rss_bench sysinfo)
BENCH_MEM_ARGS ?=
# make bench's memory rows: the whole-run ones. The 2048x2048 tiled VAE decode takes most of an
# hour on 2 cores, so it runs only under make bench-memory.
BENCH_MEM_ROWS ?= sd15-512,sd15-512-3step,sd15-512-lowmem,sdxl-1024,sdxl-1024-lowmem
BENCH_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,--wrap=posix_memalign
SD_BENCH_CACHE ?= bench/cache
BENCH_DTYPE ?= f32
BENCH_MODEL := $(SD_BENCH_CACHE)/sd15-$(BENCH_DTYPE)
BENCH_ARGS ?=

.PHONY: all test test-asan test-isa test-clang test-full clean bench-kernels bench bench-memory
all: $(BINS) $(TESTS) $(FULLS) $(BENCH_SD) $(BENCH_MAKE_MODEL) $(BENCH_RSS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(CLI_LIB): $(CLI_COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BINDIR)/%: $(BUILD)/cli/%.o $(CLI_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(CLI_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH_KERNELS): $(BUILD)/bench/kernels.o $(BUILD)/bench/model.o $(BUILD)/bench/peak.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(BENCH_BLAS_LIBS) -o $@

bench-kernels: $(BENCH_KERNELS)
	$(BENCH_KERNELS)

$(BENCH_SD): $(BENCH_SD_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(BENCH_WRAP) $^ $(LDLIBS) -o $@

$(BENCH_MAKE_MODEL): $(BUILD)/bench/make_model.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH_RSS): $(BENCH_RSS_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $(BENCH_WRAP) $^ $(LDLIBS) -o $@

bench: $(BENCH_SD) $(BENCH_MAKE_MODEL)
	@mkdir -p $(SD_BENCH_CACHE)
	$(BENCH_MAKE_MODEL) bench/models/sd15 $(BENCH_MODEL) --dtype $(BENCH_DTYPE)
	$(BENCH_SD) $(BENCH_MODEL) $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-memory BENCH_MEM_ARGS="--only $(BENCH_MEM_ROWS) $(BENCH_MEM_ARGS)"


bench-memory: $(BENCH_RSS) $(BENCH_MAKE_MODEL) $(BINDIR)/gen $(BINDIR)/vae-check
	@mkdir -p $(SD_BENCH_CACHE)
	$(BENCH_MAKE_MODEL) bench/models/sd15 $(SD_BENCH_CACHE)/sd15-f16 --dtype f16
	$(BENCH_MAKE_MODEL) bench/models/sdxl $(SD_BENCH_CACHE)/sdxl-f16 --dtype f16
	$(BENCH_RSS) --cache $(SD_BENCH_CACHE) --bin $(BINDIR) $(BENCH_MEM_ARGS)

test: all
	@tests/run.sh $(BUILD)/tests $(BINDIR)

test-isa: all
	@for isa in $$(tests/isa_levels.sh --below-best); do \
	    echo "=== SD_KERNEL_ISA=$$isa"; SD_KERNEL_ISA=$$isa tests/run.sh $(BUILD)/tests $(BINDIR) || exit 1; \
	done

test-clang:
	$(MAKE) CC=clang BUILD=build-clang BINDIR=build-clang/bin test

test-full: $(FULLS)
	@failed=0; for t in $(FULLS); do echo "== $$(basename $$t)"; $$t || failed=1; done; exit $$failed

# Sanitizers slow everything down ~3x; the suite is sized so this stays in minutes.
test-asan:
	$(MAKE) BUILD=build-asan BINDIR=build-asan/bin OPT="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" test

clean:
	rm -rf build build-asan build-clang bin

-include $(BUILD)/bench/kernels.d $(BUILD)/bench/model.d $(BUILD)/bench/peak.d $(BENCH_SD_OBJ:.o=.d) \
    $(BUILD)/bench/make_model.d $(BUILD)/bench/rss_bench.d
-include $(LIB_OBJ:.o=.d) $(TESTS:=.d) $(FULLS:=.d) $(TEST_COMMON:.o=.d) $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.d) \
    $(CLI_COMMON_OBJ:.o=.d)
