# syntax=docker/dockerfile:1
# rankcollapse in a container: docs/containers.md says how to build it and how to run it on
# NVIDIA GPUs, on CPU-only hosts and on Kubernetes. Both stages run scripts that CI checks
# (scripts/container/check.sh): build.sh for the build, runtime-deps.sh for the runtime packages.

# Build stage: the official Rust image on Debian bookworm, pinned to the toolchain the project
# is tested with (Cargo.toml's rust-version is the floor; check.sh compares them).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bash scripts/container/build.sh /out

# Runtime stage: Debian bookworm (the same glibc the binary was linked against), the Vulkan
# loader and Mesa's software Vulkan driver (lavapipe) as the fallback adapter.
FROM debian:bookworm-slim AS runtime
RUN --mount=type=bind,source=scripts/container/runtime-deps.sh,target=/tmp/runtime-deps.sh \
    bash /tmp/runtime-deps.sh \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --no-log-init --create-home --uid 10001 --user-group --shell /usr/sbin/nologin rankcollapse \
    && install -d -o rankcollapse -g rankcollapse /data
COPY --from=build /out/rankcollapse /usr/local/bin/rankcollapse
# The NVIDIA container toolkit reads these. Vulkan needs "graphics": only with it does the toolkit
# inject the driver's Vulkan ICD file (nvidia_icd.json) and libraries; with compute,utility alone
# the GPU is invisible to wgpu and `auto` runs the CPU engine.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["rankcollapse"]
CMD ["--help"]
