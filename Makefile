# tierload — the one entry point: `make demo`, `make test`, `make asan`, `make tsan`,
# `make fuzz FUZZ_SECONDS=N`, `make bench`, `make install`, `make deb`. Those targets install
# missing Debian build dependencies with apt-get first (`make deps`; root on a fresh Debian 12
# machine). `make build` only builds: it never installs anything. These are the project's own
# builds, so they compile with -Werror (TL_WERROR=ON); a plain cmake build does not.

BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
DEB_PKGS   := cmake make gcc g++ git python3-yaml clang libclang-rt-14-dev pkg-config libcjson-dev libxxhash-dev liburing-dev libcmocka-dev valgrind librsvg2-bin groff-base dpkg-dev file python3-numpy python3-torch python3-pip python3-setuptools

.PHONY: all deps deps-build build ggml test demo asan tsan fuzz bench valgrind mutants clean format install deb

all: build

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTL_WERROR=ON >/dev/null

# Configured again when the ggml build appeared since (the ggml tests and examples need it).
build: $(BUILD)/Makefile
	@if [ -f $(BUILD)/ggml/include/ggml.h ] && [ $(BUILD)/ggml/include/ggml.h -nt $(BUILD)/CMakeCache.txt ]; then \
	  cmake -S . -B $(BUILD) >/dev/null; fi
	cmake --build $(BUILD) -j $(JOBS)

# ggml (CPU, RPC), ggml-rpc-server and libllama from llama.cpp's source in npm node-llama-cpp@3.22.1,
# built once into $(BUILD)/ggml (a few minutes on 2 cores; later calls reuse it).
ggml: deps
	JOBS=$(JOBS) ./tools/build_ggml.sh $(BUILD) --llama

# deps first, then the build (a recursive make keeps that order under -j).
deps-build: deps
	@$(MAKE) --no-print-directory build

# ggml first: the test data (ctest's testdata fixture) is made with llama.cpp's tools from it, and
# the tests built against ggml's headers (tests/ggml) are configured only where it exists.
test: deps
	@$(MAKE) --no-print-directory ggml
	@$(MAKE) --no-print-directory build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The main job on its embedded default: a cached SD-shaped model and LoRA, run through a small
# simulated GPU (lazy loads, time-sharing, streaming), with its plan and timeline drawn.
demo: deps-build
	./$(BUILD)/tierload demo

# The sanitizer builds make their test data with the ggml build of $(BUILD) (not built twice).
GGML_ROOT := $(abspath $(BUILD))/ggml

asan: ggml
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTL_SANITIZE=ON -DTL_GGML_ROOT=$(GGML_ROOT) -DTL_WERROR=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && LSAN_OPTIONS=suppressions=$(CURDIR)/tools/lsan.supp ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)

tsan: ggml
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DTL_TSAN=ON -DCMAKE_C_COMPILER=clang -DTL_GGML_ROOT=$(GGML_ROOT) -DTL_WERROR=ON >/dev/null
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/tools/tsan.supp" ctest --output-on-failure -j $(JOBS)

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DTL_SANITIZE=ON -DTL_FUZZ=ON -DTL_WERROR=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	./tools/fuzz.sh build-fuzz $(FUZZ_SECONDS)

valgrind: deps-build
	./tools/valgrind.sh $(BUILD)

bench: deps-build
	./bench/run.sh $(BUILD)

# Mutation run (tools/mutants.sh): each listed mutant alone in a scratch copy, its tests rebuilt
# and run; prints the kill table. Minutes: not part of `make test` or CI.
mutants: deps-build
	JOBS=$(JOBS) ./tools/mutants.sh $(BUILD)

install: deps-build
	cmake --install $(BUILD)

# A Debian package (Release, prefix /usr) in build-deb/: tierload_VERSION_ARCH.deb.
deb: deps
	cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DTL_WERROR=ON >/dev/null
	cmake --build build-deb -j $(JOBS)
	cd build-deb && cpack -G DEB

format:
	clang-format -i include/*.h src/*/*.c src/*/*.h llama/*.[ch] examples/llamacpp/*.c tests/*.c tests/helpers/*.[ch] bench/*.c fuzz/*.c

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz build-deb
