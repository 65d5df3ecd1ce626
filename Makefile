# Builds the engine library (build/libsd.a), the command-line tools (bin/) and the tests.
#   make            library + tools
#   make test       the test suite (the README's test command); ends with "N passed, N failed"
#   make test-asan  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench-kernels  kernel micro-benchmark (GFLOP/s and % of the measured FMA peak); not a test
#   make clean
CC ?= gcc
BUILD ?= build
BINDIR ?= bin
OPT ?= -O2 -g
SAN ?=
CPPFLAGS += -D_GNU_SOURCE -I/usr/include/cjson
CFLAGS += -std=c11 $(OPT) $(SAN) -fopenmp -Wall -Wextra -MMD -MP
LDFLAGS += $(SAN) -fopenmp
LDLIBS += -lopenblas -lcjson -lpng -ljpeg -lm

SRC_DIRS := core kernels nn text_encoder unet vae schedulers pipeline
LIB_SRC := $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libsd.a

CLI_SRC := $(wildcard cli/*.c)
BINS := $(CLI_SRC:cli/%.c=$(BINDIR)/%)

TEST_COMMON := $(BUILD)/tests/common.o
TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

BENCH_KERNELS := $(BUILD)/bench/kernels

.PHONY: all test test-asan test-full clean bench-kernels
all: $(BINS) $(TESTS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BINDIR)/%: $(BUILD)/cli/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH_KERNELS): $(BUILD)/bench/kernels.o $(BUILD)/bench/model.o $(BUILD)/bench/peak.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

bench-kernels: $(BENCH_KERNELS)
	$(BENCH_KERNELS)

test: all
	@tests/run.sh $(BUILD)/tests $(BINDIR)

# Sanitizers slow everything down ~3x; the suite is sized so this stays in minutes.
test-asan:
	$(MAKE) BUILD=build-asan BINDIR=build-asan/bin OPT="-O1 -g" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" test

clean:
	rm -rf build build-asan bin

-include $(BUILD)/bench/kernels.d $(BUILD)/bench/model.d $(BUILD)/bench/peak.d
-include $(LIB_OBJ:.o=.d) $(TESTS:=.d) $(TEST_COMMON:.o=.d) $(CLI_SRC:cli/%.c=$(BUILD)/cli/%.d)
