# tierload — the one entry point: `make demo`, `make test`, `make asan`, `make tsan`,
# `make fuzz FUZZ_SECONDS=N`, `make bench`. Missing Debian build dependencies are
# installed with apt-get first (root on a fresh Debian 12 machine).

BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 60
DEB_PKGS   := cmake make gcc clang libclang-rt-14-dev pkg-config libcjson-dev libxxhash-dev liburing-dev libcmocka-dev valgrind python3-torch python3-numpy

.PHONY: all deps build test demo asan tsan fuzz bench valgrind clean format install

all: build

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/Makefile: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The main job on its embedded default: build a model file and describe it.
demo: build
	./$(BUILD)/tierload demo

asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTL_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)

tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DTL_TSAN=ON -DCMAKE_C_COMPILER=clang >/dev/null
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -j $(JOBS)

fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DTL_SANITIZE=ON -DTL_FUZZ=ON >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	./tools/fuzz.sh build-fuzz $(FUZZ_SECONDS)

valgrind: build
	./tools/valgrind.sh $(BUILD)

bench: build
	./bench/run.sh $(BUILD)

install: build
	cmake --install $(BUILD)

format:
	clang-format -i include/*.h src/*/*.c src/*/*.h tests/*.c tests/helpers/*.[ch] bench/*.c fuzz/*.c

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
