#!/usr/bin/env bash
# The image's runtime packages (Dockerfile, stage "runtime"), also run by CI on its Debian
# bookworm machine (scripts/container/check.sh): the Vulkan loader, through which wgpu reaches
# the NVIDIA driver (its ICD file, nvidia_icd.json, is injected by the NVIDIA container toolkit
# when NVIDIA_DRIVER_CAPABILITIES includes graphics), and Mesa's Vulkan drivers, whose lavapipe
# is the software adapter of hosts without a GPU. It leaves the apt lists in place: the
# Dockerfile removes them in the same RUN, CI needs them afterwards.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Not pinned to versions: bookworm's security updates replace them, and a pinned version that
# the archive no longer has would break every later build.
apt-get install -y -qq --no-install-recommends libvulkan1 mesa-vulkan-drivers >/dev/null
# What the image relies on, checked after the install rather than assumed from package names.
arch=$(uname -m)
loader=$(ldconfig -p | grep -o '/[^ ]*/libvulkan\.so\.1$' | head -n1 || true)
if [[ -z $loader ]]; then
    echo "runtime-deps.sh: the Vulkan loader libvulkan.so.1 is not in the linker cache" >&2
    exit 1
fi
icd=/usr/share/vulkan/icd.d/lvp_icd.$arch.json
if [[ ! -f $icd ]]; then
    echo "runtime-deps.sh: no lavapipe ICD file $icd" >&2
    ls /usr/share/vulkan/icd.d/ >&2 || true
    exit 1
fi
lib=$(sed -n 's/.*"library_path": *"\([^"]*\)".*/\1/p' "$icd")
if [[ ! -f $lib ]]; then
    echo "runtime-deps.sh: $icd names $lib, which is missing" >&2
    exit 1
fi
echo "runtime-deps.sh: Vulkan loader $loader, lavapipe $lib"
