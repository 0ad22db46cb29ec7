# Firebreak build. `make` builds build/firebreak; `make test` runs every test
# against the normal build; `make check` runs them again under ASan+UBSan
# (build-san/). SPDX-License-Identifier: MIT

SAN ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
SANFLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT = -O1 -g
else
BUILD ?= build
SANFLAGS =
OPT = -O2 -g
endif

CC ?= gcc
PKGS = libuv jansson libsodium sqlite3 openssl ncursesw libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))
CFLAGS ?= $(OPT)
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
          -Isrc -MMD -MP $(PKG_CFLAGS) $(SANFLAGS)
LDLIBS = $(PKG_LIBS) -lwslay -lhttp_parser -lpthread -lm
LDFLAGS += $(SANFLAGS)

LIB_SRC := $(wildcard src/common/*.c src/store/*.c src/proto/*.c src/chat/*.c \
                      src/server/*.c src/client/*.c src/tools/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/src/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
INTEG_SRC := $(wildcard tests/integration/test_*.c)
TEST_COMMON_SRC := $(wildcard tests/common/*.c)
TEST_COMMON_OBJ := $(TEST_COMMON_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
INTEG_BIN := $(INTEG_SRC:tests/integration/%.c=$(BUILD)/tests/%)

.PHONY: all test check clean format
.SECONDARY:

all: $(BUILD)/firebreak $(UNIT_BIN) $(INTEG_BIN)

$(BUILD)/libfirebreak.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/firebreak: $(MAIN_OBJ) $(BUILD)/libfirebreak.a
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(TEST_COMMON_OBJ) $(BUILD)/libfirebreak.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $(filter %.c %.o %.a,$^) $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/tests/%: tests/integration/%.c $(TEST_COMMON_OBJ) $(BUILD)/libfirebreak.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $(filter %.c %.o %.a,$^) $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -c -o $@ $<

# Every test program of this build; ends with "N passed, N failed".
test: all
	tests/run.sh $(BUILD)

# The whole suite, then again under AddressSanitizer + UndefinedBehaviorSanitizer,
# then one closing line for both.
check:
	@$(MAKE) --no-print-directory test 2>&1 | tee build-test.log
	@$(MAKE) --no-print-directory SAN=1 test 2>&1 | tee build-san-test.log
	@p=0; f=0; for l in build-test.log build-san-test.log; do \
	  set -- $$(sed -n 's/^build[a-z-]*: \([0-9]*\) passed, \([0-9]*\) failed$$/\1 \2/p' $$l); \
	  p=$$((p + $${1:-0})); f=$$((f + $${2:-1})); done; \
	  rm -f build-test.log build-san-test.log; \
	  echo "$$p passed, $$f failed"; [ $$f -eq 0 ]

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
