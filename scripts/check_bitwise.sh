#!/usr/bin/env bash
# Checks that a change left every number the engines produce bitwise as it was: builds BASE (a git
# revision, default the parent of the first refactoring commit) and the working tree, runs a fixed
# set of small configurations (every mask, norm, MLP, attention kind, skip, weight and input
# family; CPU f64, CPU f32, and the GPU engine on whatever adapter wgpu finds, lavapipe here) with
# --sequences-csv, and compares sequences.csv and layers.csv byte for byte.
#
#   scripts/check_bitwise.sh [BASE]      # exit 0: identical; 1: a difference (printed)
#
# The GPU runs are skipped (and said so) when no adapter is found. The exit status of each run is
# compared too.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-d5583f8}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base-tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# Both builds share the target directory (the dependencies are built once); each binary is copied
# out at once because both are called release/rankcollapse, under a lock so that two checks from
# two worktrees sharing one CARGO_TARGET_DIR cannot swap binaries.
tdir=${CARGO_TARGET_DIR:-$PWD/target}
mkdir -p "$tdir"
git worktree add --detach "$work/base-tree" "$base" >/dev/null 2>&1
(
  flock 9
  CARGO_TARGET_DIR="$tdir" cargo build --release --quiet --manifest-path "$work/base-tree/Cargo.toml"
  cp "$tdir/release/rankcollapse" "$work/base-bin"
  CARGO_TARGET_DIR="$tdir" cargo build --release --quiet
  cp "$tdir/release/rankcollapse" "$work/head-bin"
) 9>"$tdir/.check_bitwise.lock"

# name | flags (every run: --sequences 4 --seed 7 --spectrum-every 2 unless the flags say otherwise)
configs=(
  "pure-full|--depth 6 --tokens 9 --width 8 --heads 2"
  "causal|--depth 5 --tokens 10 --width 8 --heads 2 --mask causal"
  "window|--depth 5 --tokens 11 --width 8 --heads 1 --mask window:3 --skip standard"
  "causal-window|--depth 5 --tokens 12 --width 8 --heads 2 --mask causal-window:4 --norm post-ln"
  "pre-ln-gelu|--depth 4 --tokens 9 --width 8 --heads 2 --norm pre-ln --skip standard --mlp gelu:2"
  "post-ln-relu|--depth 4 --tokens 9 --width 12 --heads 3 --norm post-ln --skip standard --mlp relu:2"
  "rms-scaled|--depth 4 --tokens 8 --width 8 --heads 2 --norm rms --skip scaled:0.5,1.5 --mlp gelu:1"
  "sphere|--depth 4 --tokens 8 --width 8 --heads 1 --norm pre-sphere --skip standard --value orthogonal"
  "markov-outlier|--depth 5 --tokens 12 --width 8 --heads 2 --attention markov --remove-outlier"
  "uniform|--depth 3 --tokens 7 --width 6 --heads 1 --attention uniform --skip standard --input shared:0.5"
  "identity-attn|--depth 3 --tokens 7 --width 6 --heads 1 --attention identity --mlp relu:2 --skip standard"
  "softmax-outlier|--depth 4 --tokens 8 --width 8 --heads 2 --remove-outlier --input orthonormal"
  "saturated|--depth 4 --tokens 8 --width 8 --heads 1 --temperature 8 --value identity --out-proj none"
  "per-seq-shared|--depth 4 --tokens 8 --width 8 --heads 2 --per-sequence-weights --share-layers --input sphere --qk gaussian:2 --out-proj identity"
)
engines=("cpu --precision f64" "cpu --precision f32" "gpu")

have_gpu=1
if ! "$work/head-bin" run --engine gpu --depth 1 --tokens 4 --width 4 --heads 1 --sequences 1 >/dev/null 2>"$work/probe"; then
  tail -n 3 "$work/probe"
  if [[ -n ${RANKCOLLAPSE_REQUIRE_GPU:-} ]]; then
    echo "RANKCOLLAPSE_REQUIRE_GPU is set but the GPU engine did not run"
    exit 1
  fi
  have_gpu=0
  echo "no GPU adapter: the GPU runs are SKIPPED (set RANKCOLLAPSE_REQUIRE_GPU=1 to make this a failure)"
fi

fail=0
runs=0
for c in "${configs[@]}"; do
  name=${c%%|*}
  flags=${c#*|}
  for e in "${engines[@]}"; do
    [[ $e == gpu && $have_gpu == 0 ]] && continue
    tag="$name/$(tr -d ' -' <<<"${e/--precision/}")"
    for who in base head; do
      dir="$work/$who/$tag"
      mkdir -p "$dir"
      # shellcheck disable=SC2086
      "$work/$who-bin" run $flags --sequences 4 --seed 7 --spectrum-every 2 --engine $e \
        --threads 2 --out "$dir" --sequences-csv --format json >"$dir/stdout.json" 2>"$dir/stderr" \
        && echo 0 >"$dir/rc" || echo $? >"$dir/rc"
    done
    runs=$((runs + 1))
    same=1
    if [[ ! -f $work/head/$tag/sequences.csv ]]; then
      echo "FAILED: $tag did not run:"
      tail -n 3 "$work/head/$tag/stderr"
      fail=1
      continue
    fi
    for f in sequences.csv layers.csv rc; do
      if ! cmp -s "$work/base/$tag/$f" "$work/head/$tag/$f"; then
        echo "DIFFERENT: $tag $f"
        diff <(head -c 2000 "$work/base/$tag/$f" 2>&1) <(head -c 2000 "$work/head/$tag/$f") | head -8 || true
        same=0
      fi
    done
    if [[ $same == 1 ]]; then
      printf 'same  %-40s %s\n' "$tag" "$(sha256sum <"$work/head/$tag/sequences.csv" | cut -c1-16)"
    else
      fail=1
    fi
  done
done
echo "$runs runs compared (base $base vs the working tree): $([[ $fail == 0 ]] && echo 'all bitwise identical' || echo 'DIFFERENCES above')"
exit $fail
