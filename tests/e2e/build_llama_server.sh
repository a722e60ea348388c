#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` for the end-to-end tests and prints the binary's path.
#
# The source comes from the llama-cpp-python sdist (a test dependency that vendors llama.cpp),
# pinned to the llama-cpp-python version installed in this environment, so the tests run the
# same llama.cpp that the Python bindings use. The binary is cached outside the checkout,
# one directory per version; a second run with the binary in place does nothing.
#
# Environment: LLAMA_CPP_PYTHON_VERSION overrides the version; XDG_CACHE_HOME moves the cache;
# BUILD_JOBS sets the compile parallelism (default 2). Progress goes to stderr, the path to stdout.
set -euo pipefail

python="${PYTHON:-python3}"
version="${LLAMA_CPP_PYTHON_VERSION:-$("$python" -c \
    'import importlib.metadata as m; print(m.version("llama-cpp-python"))')}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/llamaswap-test/llama-server-$version"
binary="$cache/bin/llama-server"

if [ -x "$binary" ] && [ "$(cat "$cache/VERSION" 2>/dev/null)" = "$version" ]; then
    echo "$binary"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "building llama-server from llama-cpp-python $version in $work" >&2
"$python" -m pip download --quiet --no-binary llama-cpp-python --no-deps \
    "llama-cpp-python==$version" -d "$work/sdist" >&2
tar -xzf "$work"/sdist/llama_cpp_python-*.tar.gz -C "$work"
source_dir="$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)"
[ -f "$source_dir/CMakeLists.txt" ] || { echo "no llama.cpp source in the sdist" >&2; exit 1; }

# Static, portable (no -march=native), no network at build time (no prebuilt web UI download).
cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
cmake --build "$work/build" --target llama-server -j "${BUILD_JOBS:-2}" >&2

# Install atomically: a half-copied cache directory must never look complete.
staging="$cache.partial.$$"
rm -rf "$staging"
mkdir -p "$staging/bin"
cp "$work/build/bin/llama-server" "$staging/bin/llama-server"
echo "$version" > "$staging/VERSION"
"$staging/bin/llama-server" --version >&2 || { echo "built binary does not run" >&2; exit 1; }
rm -rf "$cache"
mv "$staging" "$cache"
echo "$binary"
