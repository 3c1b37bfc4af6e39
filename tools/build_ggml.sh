#!/bin/sh
# Builds ggml (CPU and RPC backends, shared libraries), ggml-rpc-server and, with --llama,
# llama.cpp's libllama from the llama.cpp source that the npm package node-llama-cpp@3.22.1
# ships as a git bundle. Everything lands under BUILD/ggml (cached: a finished build is reused):
#   BUILD/ggml/src      the source (a clone of the bundle)
#   BUILD/ggml/build    the CMake build
#   BUILD/ggml/lib      libggml-base.so, libggml.so, libggml-cpu.so, libggml-rpc.so (+ libllama.so)
#   BUILD/ggml/include  ggml's public headers (+ llama.h)
#   BUILD/ggml/bin      ggml-rpc-server (+ llama-quantize)
# Usage: tools/build_ggml.sh BUILD [--llama]
set -eu
BUILD=${1:?usage: build_ggml.sh BUILD [--llama]}
LLAMA=0
[ "${2:-}" = "--llama" ] && LLAMA=1
PKG=node-llama-cpp@3.22.1
mkdir -p "$BUILD"
G=$(cd "$BUILD" && pwd)/ggml
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
mkdir -p "$G"

if [ -f "$G/lib/libggml.so" ] && [ -x "$G/bin/ggml-rpc-server" ] &&
   { [ $LLAMA = 0 ] || { [ -f "$G/lib/libllama.so" ] && [ -x "$G/bin/llama-quantize" ]; }; }; then
    exit 0
fi

if [ ! -f "$G/src/ggml/CMakeLists.txt" ]; then
    command -v npm >/dev/null 2>&1 || { echo "build_ggml.sh: npm is needed to fetch $PKG (apt-get install npm)" >&2; exit 1; }
    command -v git >/dev/null 2>&1 || { echo "build_ggml.sh: git is needed to read the source bundle" >&2; exit 1; }
    rm -rf "$G/npm" "$G/src"
    mkdir -p "$G/npm"
    echo "build_ggml.sh: fetching $PKG (llama.cpp's source as a git bundle)" >&2
    (cd "$G/npm" && npm pack --silent "$PKG" >/dev/null) || { echo "build_ggml.sh: npm pack $PKG failed" >&2; exit 1; }
    tar -xzf "$G"/npm/node-llama-cpp-*.tgz -C "$G/npm" package/llama/gitRelease.bundle
    git -c advice.detachedHead=false clone -q "$G/npm/package/llama/gitRelease.bundle" "$G/src"
    rm -f "$G"/npm/node-llama-cpp-*.tgz
fi

targets="ggml ggml-base ggml-cpu ggml-rpc ggml-rpc-server"
[ $LLAMA = 1 ] && targets="$targets llama llama-quantize"
echo "build_ggml.sh: building $targets (a few minutes on 2 cores)" >&2
cmake -S "$G/src" -B "$G/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_RPC=ON -DGGML_NATIVE=ON -DGGML_OPENMP=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON=ON \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$G/configure.log" 2>&1 ||
    { echo "build_ggml.sh: configure failed, see $G/configure.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$G/build" -j "$JOBS" --target $targets >"$G/build.log" 2>&1 ||
    { echo "build_ggml.sh: build failed, see $G/build.log" >&2; exit 1; }

# Files are replaced by rename, never rewritten in place: a running ggml-rpc-server or a test
# that has the libraries loaded keeps its own copy.
mkdir -p "$G/lib" "$G/include" "$G/bin"
put() { cp -P "$1" "$2/.new.$(basename "$1")" && mv -f "$2/.new.$(basename "$1")" "$2/$(basename "$1")"; }
for f in $(find "$G/build" -name 'lib*.so*'); do put "$f" "$G/lib"; done
for f in "$G"/src/ggml/include/*.h "$G/src/include/llama.h"; do put "$f" "$G/include"; done
for t in ggml-rpc-server llama-quantize; do
    f=$(find "$G/build" -name "$t" -type f | head -n 1)
    [ -z "$f" ] || put "$f" "$G/bin"
done
echo "build_ggml.sh: ggml in $G" >&2
