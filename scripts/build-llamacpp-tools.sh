#!/usr/bin/env bash
# Builds llama.cpp's llama-imatrix, llama-quantize and llama-perplexity from the
# source that node-llama-cpp ships on npm (llama/gitRelease.bundle, a git bundle
# of the llama.cpp release it was built against), for scripts/bench-imatrix.sh.
#
#   1. node-llama-cpp@VERSION into build/conformance (tests/conformance/install.sh,
#      shared with the conformance check and scripts/bench-llamacpp.sh)
#   2. git clone of the bundle into build/llamacpp-src (again when the bundle's head changes)
#   3. cmake Release build of those three targets only into build/llamacpp-build
#      (GGML_NATIVE=ON, static, no server/tests/examples/UI/OpenSSL)
# Nothing is rebuilt while the three binaries are newer than the bundle.
#
# usage: bash scripts/build-llamacpp-tools.sh
# env:   NODE_LLAMA_CPP_VERSION (default 3.22.1), JOBS (default nproc)
# Prints the binaries' folder on its last line (stdout). Skips with a message
# (exit 0, no folder printed) without node/npm, cmake or the bundle; exits 1 when
# the clone or the build fails. No network but the npm registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${NODE_LLAMA_CPP_VERSION:-3.22.1}
jobs=${JOBS:-$(nproc)}
work=$root/build/conformance
src=$root/build/llamacpp-src
bld=$root/build/llamacpp-build
targets=(llama-imatrix llama-quantize llama-perplexity)

skip() {
    echo "build-llamacpp-tools: skipped: $*" >&2
    exit 0
}

. "$root/tests/conformance/install.sh"
command -v cmake >/dev/null 2>&1 || skip "cmake not installed (Debian: apt-get install cmake g++)"
command -v git >/dev/null 2>&1 || skip "git not installed"
llamacpp_node_ok || skip "$llamacpp_problem"
llamacpp_install "$work" "$version" >&2 || skip "$llamacpp_problem"
bundle=$work/node_modules/node-llama-cpp/llama/gitRelease.bundle
[ -f "$bundle" ] || skip "node-llama-cpp@$version ships no llama/gitRelease.bundle"

fresh=1
for t in "${targets[@]}"; do
    [ "$bld/bin/$t" -nt "$bundle" ] || fresh=0
done
if [ "$fresh" = 1 ]; then
    echo "$bld/bin"
    exit 0
fi

head=$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" { print $1 }')
[ -n "$head" ] || { echo "build-llamacpp-tools: $bundle has no HEAD" >&2; exit 1; }
if [ "$(git -C "$src" rev-parse HEAD 2>/dev/null)" != "$head" ]; then
    echo "build-llamacpp-tools: cloning $bundle ($head) into $src" >&2
    rm -rf "$src" "$bld"
    git -c advice.detachedHead=false clone -q "$bundle" "$src" >&2
    git -C "$src" checkout -q "$head"
fi

start=$(date +%s)
echo "build-llamacpp-tools: building ${targets[*]} in $bld ($jobs jobs)" >&2
cmake -S "$src" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_CCACHE=OFF \
    >"$bld.log" 2>&1 ||
    { tail -20 "$bld.log" >&2; echo "build-llamacpp-tools: cmake configure failed (see $bld.log)" >&2; exit 1; }
cmake --build "$bld" --target "${targets[@]}" -j "$jobs" >>"$bld.log" 2>&1 ||
    { tail -20 "$bld.log" >&2; echo "build-llamacpp-tools: build failed (see $bld.log)" >&2; exit 1; }
for t in "${targets[@]}"; do
    [ -x "$bld/bin/$t" ] || { echo "build-llamacpp-tools: $bld/bin/$t missing after the build" >&2; exit 1; }
    touch "$bld/bin/$t"
done
echo "build-llamacpp-tools: built in $(($(date +%s) - start)) s" >&2
echo "$bld/bin"
