#!/usr/bin/env bash
# The image's build stage (Dockerfile, stage "build"): builds the release binary from the lock
# file as committed and copies it to OUT_DIR (default /out). CI checks this script with bash -n
# and checks that Cargo.lock is complete (scripts/container/check.sh); it does not run it.
# The crate's build needs only the Rust toolchain and a C linker, both in the official rust
# image: GMP and MPFR are dev-dependencies (the tests' reference), and wgpu loads Vulkan,
# Wayland and EGL at run time (dlopen), so no -dev package is installed here.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-/out}
cargo --version
cargo build --release --locked --bin rankcollapse
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$out"
install -m 0755 "$target/release/rankcollapse" "$out/rankcollapse"
# The runtime stage is debian:bookworm-slim: the binary must need nothing beyond libc, libm and
# libgcc_s (the Vulkan loader is opened at run time, not linked).
if command -v ldd >/dev/null; then
    ldd "$out/rankcollapse"
    if ldd "$out/rankcollapse" | grep -vE 'linux-vdso|ld-linux|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so' | grep -q .; then
        echo "build.sh: the binary links a library the runtime image does not have (above)" >&2
        exit 1
    fi
fi
"$out/rankcollapse" --version
