#!/usr/bin/env bash
# Validates the job files `sweep plan --emit` writes, offline:
#   - Kubernetes: the Indexed Job without and with a GPU, with node selectors and tolerations, a
#     time limit and limits, against the Kubernetes 1.30 schema in strict mode (unknown fields
#     are errors) with `kubernetes-validate` from PyPI, which ships its schemas (installed with
#     pip when missing; set KUBERNETES_VERSION to validate against another version it ships);
#   - Slurm: `bash -n` of the sbatch script and every requested resource as an #SBATCH line.
# Builds the debug binary (`cargo build`; CARGO_TARGET_DIR applies). Exit status 0 only on PASS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS
k8s_version=${KUBERNETES_VERSION:-1.30.0}
bin=${CARGO_TARGET_DIR:-target}/debug/rankcollapse
# Always: a stale binary would validate old job files (a no-op when up to date; in CI the Slurm
# test's `cargo build` of the same profile then has nothing left to do).
cargo build --quiet
[[ -x $bin ]] || { echo "validate_jobs: no binary at $bin" >&2; exit 1; }
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/rankcollapse-validate-jobs.XXXXXX")
trap 'rm -rf "$work"' EXIT
spec=tests/data/sweep_small.toml
passed=0
failed=0
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@" >"$work/last.log" 2>&1; then
        passed=$((passed + 1))
        echo "validate_jobs: ok: $name" >&2
    else
        failed=$((failed + 1))
        echo "validate_jobs: NOT OK: $name" >&2
        cat "$work/last.log" >&2
    fi
}
emit() { # emit DIR ARGS...: sweep plan into DIR with ARGS
    local dir=$1
    shift
    "$bin" sweep plan "$spec" --shards 3 --out "$dir" "$@" >"$dir.plan" 2>&1 || {
        cat "$dir.plan" >&2
        echo "validate_jobs: FAIL: sweep plan $* failed" >&2
        exit 1
    }
}
validate() { kubernetes-validate --strict -k "$k8s_version" --no-warn "$1"; }

# Kubernetes: the default GPU request, none, and every placement and limit flag.
emit "$work/k8s-gpu" --emit k8s
check "k8s Job with the default GPU request validates (strict, $k8s_version)" validate "$work/k8s-gpu/sweep-job.yaml"
check "k8s Job asks for nvidia.com/gpu" grep -q 'nvidia.com/gpu: "1"' "$work/k8s-gpu/sweep-job.yaml"
emit "$work/k8s-cpu" --emit k8s --gpus-per-task 0 --cpus-per-task 2 --mem 3G
check "k8s Job without a GPU validates" validate "$work/k8s-cpu/sweep-job.yaml"
check "k8s Job without a GPU has no nvidia.com/gpu" bash -c "! grep -q nvidia.com/gpu '$work/k8s-cpu/sweep-job.yaml'"
emit "$work/k8s-all" --emit k8s --gpus-per-task 2 --cpus-per-task 4 --mem 1536M --cpu-limit 8 --mem-limit 2G \
    --time 2-00:00:00 --node-selector cloud.google.com/gke-accelerator=nvidia-l4 --node-selector pool=true \
    --toleration nvidia.com/gpu:NoSchedule --toleration dedicated=sweeps:NoExecute --image reg.io/rc/rankcollapse:1.0
check "k8s Job with limits, node selectors, tolerations and a deadline validates" validate "$work/k8s-all/sweep-job.yaml"
# The validator itself must refuse a broken Job, or the checks above prove nothing.
sed 's/completionMode: Indexed/completionMod: Indexed/' "$work/k8s-all/sweep-job.yaml" >"$work/broken.yaml"
check "kubernetes-validate refuses an unknown field" bash -c "! kubernetes-validate --strict -k '$k8s_version' --no-warn '$work/broken.yaml'"

# Slurm: syntax, and each request as its #SBATCH line.
emit "$work/slurm" --emit slurm --gpus-per-task 2 --cpus-per-task 8 --mem 16G --time 1:30:00 --partition gpu \
    --account proj --gpu-request gpus-per-task
sbatch_file=$work/slurm/sweep.sbatch
check "sbatch script parses (bash -n)" bash -n "$sbatch_file"
for line in --array=0-2 --ntasks=1 --cpus-per-task=8 --mem=16G --gpus-per-task=2 --time=01:30:00 \
    --partition=gpu --account=proj; do
    check "sbatch has #SBATCH $line" grep -qx -- "#SBATCH $line" "$sbatch_file"
done
emit "$work/slurm-gres" --emit slurm
check "default sbatch script parses (bash -n)" bash -n "$work/slurm-gres/sweep.sbatch"
check "default sbatch asks for --gres=gpu:1" grep -qx -- "#SBATCH --gres=gpu:1" "$work/slurm-gres/sweep.sbatch"

echo "validate_jobs: took $((SECONDS - started)) s" >&2
if ((failed)); then echo "validate_jobs: FAIL"; fi
echo "validate_jobs: $passed passed, $failed failed"
((failed == 0))
