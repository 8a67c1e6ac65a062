#!/usr/bin/env bash
# End-to-end test of `rankcollapse sweep` on a real single-node Slurm cluster:
#   1. cargo build (the dev profile: it shares the dependencies the tests built)
#   2. start Slurm (scripts/slurm/start.sh; installs slurm-wlm and munge when missing)
#   3. write a small sweep spec (2 depths x 3 masks, one excluded, 2 repeats: 10 points)
#   4. `sweep plan --shards 3 --emit slurm` with CPU, memory and time requests and the default
#      GPU request (a gres of the cluster's fake GPUs); check the #SBATCH lines, then
#      `sbatch --wait` the emitted array job with them
#   5. `sweep status` and `sweep merge` of the Slurm results
#   6. the same spec in one process: `sweep run` then `sweep merge`
#   7. the two merged.csv files must be byte-identical, with 10 distinct point ids
# Slurm is stopped on exit. Needs root (the daemons run as root). Exit status 0 only on PASS.
#
# Environment: KEEP_SLURM_TEST_DIR=1 keeps the work directory after a pass (it is always kept
# after a failure); SLURM_TEST_JOB_TIMEOUT bounds the wait for the array job (default 300 s).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
started=$SECONDS

say() { echo "slurm_test: $*" >&2; }
step() { echo "== slurm_test: $*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/rankcollapse-slurm-test.XXXXXX")
chmod 0755 "$work"
slurm_dir=$work/slurm
slurm_started=
passed=0
failures=()

cleanup() {
    local rc=$?
    trap - EXIT
    if [[ -n $slurm_started ]]; then
        "$repo/scripts/slurm/stop.sh" "$slurm_dir" || rc=1
    fi
    if ((rc == 0)) && [[ -z ${KEEP_SLURM_TEST_DIR:-} ]]; then
        rm -rf "$work"
    else
        say "work directory kept: $work"
    fi
    say "took $((SECONDS - started)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# die MESSAGE [FILE...]: print FAIL with the message and the tails of the files, exit 1.
die() {
    local msg=$1 f
    shift
    for f in "$@"; do
        [[ -e $f ]] || continue
        echo "----- $f (last 40 lines) -----" >&2
        tail -n 40 "$f" >&2
    done
    echo "slurm_test: FAIL: $msg"
    echo "slurm_test: $passed passed, 1 failed"
    exit 1
}
check() { # check NAME COMMAND...: a check that is recorded and does not stop the test
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        say "ok: $name"
    else
        failures+=("$name")
        say "NOT OK: $name"
    fi
}

step "cargo build"
cargo build
built=${CARGO_TARGET_DIR:-$repo/target}/debug/rankcollapse
[[ -x $built ]] || die "no binary at $built after cargo build"
# A copy: the emitted script names this path, and a rebuild in a shared target directory while
# the array runs must not swap the binary under its tasks.
bin=$work/rankcollapse
cp "$built" "$bin"

step "starting Slurm in $slurm_dir"
slurm_started=1
start_out=$("$repo/scripts/slurm/start.sh" "$slurm_dir") || die "scripts/slurm/start.sh failed"
grep -qx "export SLURM_CONF=$slurm_dir/slurm.conf" <<<"$start_out" ||
    die "start.sh printed no export SLURM_CONF line: $start_out"
# shellcheck source=/dev/null
source "$slurm_dir/env.sh"
say "SLURM_CONF=$SLURM_CONF"
sinfo >&2

step "writing the sweep spec"
spec=$work/spec.toml
cp tests/data/sweep_small.toml "$spec"
out_slurm=$work/out-slurm
out_local=$work/out-local
expected_points=10

step "sweep plan --shards 3 --emit slurm"
# One CPU per task (the node may have 2), a small memory request and a time limit; the GPU request
# is the default (the points' engine is auto), scheduled on the fake GPUs of start.sh.
plan_out=$("$bin" sweep plan "$spec" --shards 3 --emit slurm --out "$out_slurm" \
    --cpus-per-task 1 --mem 256M --time 10) ||
    die "rankcollapse sweep plan failed"
echo "$plan_out" >&2
sbatch_file=$out_slurm/sweep.sbatch
[[ -f $sbatch_file ]] || die "sweep plan wrote no $sbatch_file"
grep -qxF "$sbatch_file" <<<"$plan_out" || die "sweep plan did not print the path $sbatch_file"
for line in --array=0-2 --cpus-per-task=1 --mem=256M --time=00:10:00 --gres=gpu:1; do
    grep -qx -- "#SBATCH $line" "$sbatch_file" || die "$sbatch_file has no '#SBATCH $line'" "$sbatch_file"
done
grep -q "requested per task: 1 GPU, 1 CPU, 256M memory, time limit 00:10:00" <<<"$plan_out" ||
    die "sweep plan did not print what each task requests"

step "sbatch --wait $sbatch_file"
job_timeout=${SLURM_TEST_JOB_TIMEOUT:-300}
sbatch_rc=0
job_id=$(timeout "$job_timeout" sbatch --wait --parsable --chdir="$work" "$sbatch_file") ||
    sbatch_rc=$?
job_id=${job_id%%;*}
say "job ${job_id:-?}: sbatch --wait exit status $sbatch_rc"
if ((sbatch_rc != 0)); then
    if [[ -n $job_id ]]; then scancel "$job_id" 2>/dev/null || true; fi
    if ((sbatch_rc == 124)); then
        die "the array job did not finish in ${job_timeout}s" "$out_slurm"/slurm-*.log "$slurm_dir"/log/slurmctld.log
    fi
    die "the array job failed (sbatch --wait exit status $sbatch_rc)" \
        "$out_slurm"/slurm-*.log "$slurm_dir"/log/slurmctld.log "$slurm_dir"/log/slurmd.log
fi
[[ $job_id =~ ^[0-9]+$ ]] || die "sbatch --parsable printed no job id ('$job_id')"
for task in 0 1 2; do
    log=$out_slurm/slurm-${job_id}_$task.log
    check "array task $task wrote its log" test -s "$log"
    # Each task ran its own shard, not the whole sweep.
    check "array task $task ran shard $task/3" grep -q "shard $task/3" "$log"
done

step "sweep status and merge (Slurm)"
status_rc=0
status_out=$("$bin" sweep status "$out_slurm") || status_rc=$?
echo "$status_out" >&2
check "sweep status exits 0" test "$status_rc" -eq 0
check "sweep status reports $expected_points done, 0 failed, 0 missing" \
    grep -q "$expected_points done, 0 failed, 0 missing" <<<"$status_out"
"$bin" sweep merge "$out_slurm" >&2 || die "rankcollapse sweep merge $out_slurm failed"
[[ -s $out_slurm/merged.csv ]] || die "sweep merge wrote no $out_slurm/merged.csv"

step "the same sweep in one process"
"$bin" sweep run "$spec" --out "$out_local" >&2 || die "rankcollapse sweep run $spec failed"
"$bin" sweep merge "$out_local" >&2 || die "rankcollapse sweep merge $out_local failed"
[[ -s $out_local/merged.csv ]] || die "sweep merge wrote no $out_local/merged.csv"

step "comparing"
distinct_ids() { # distinct values of the point_id column of a CSV file
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "point_id") c = i; next }
             c { print $c }' "$1" | sort -u | wc -l
}
check "merged.csv has a point_id column" grep -q '^point_id,\|,point_id,\|,point_id$' "$out_slurm/merged.csv"
n_ids=$(distinct_ids "$out_slurm/merged.csv")
check "$expected_points distinct point ids (found $n_ids)" test "$n_ids" -eq "$expected_points"
if cmp -s "$out_slurm/merged.csv" "$out_local/merged.csv"; then
    check "Slurm and single-process merged.csv are byte-identical" true
else
    diff -u "$out_local/merged.csv" "$out_slurm/merged.csv" | head -n 80 >&2 || true
    check "Slurm and single-process merged.csv are byte-identical" false
fi

if ((${#failures[@]})); then
    for f in "${failures[@]}"; do echo "slurm_test: FAILED: $f"; done
    echo "slurm_test: FAIL"
    echo "slurm_test: $passed passed, ${#failures[@]} failed"
    exit 1
fi
echo "slurm_test: PASS ($expected_points points, 3 Slurm array tasks, identical to a single process)"
echo "slurm_test: $passed passed, 0 failed"
