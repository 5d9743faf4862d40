#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, in one command (within 8
# minutes on an H200):
#
#   tests/gpu/run.sh [BUILD_DIR]
#
# 1. configures --with-cuda (and MPI when found) into a fresh out-of-tree
#    build and builds;
# 2. every op on CUDA against the CPU backend, outputs poisoned: float32
#    (1e-5) and bf16 autocast (1e-2), the latter twice: attention plain and
#    through cuDNN's fused SDPA (DIFFUSE_CUDA_ATTENTION=fused);
# 3. DiT-S/2, batch 64 on 32x32x4: the loss after 20 steps on the CPU and
#    on CUDA in float32 and in bf16 autocast;
# 4. the training and sampling stages with device = "cuda"
#    (tests/gpu/stages.sh): `diffuse train` of a small DiT against the same
#    run on the cpu in float32 and bf16 autocast (attention plain and
#    fused), a resumed run against an
#    uninterrupted one, EMA sampling against the cpu, and, when MPI and NCCL
#    are built, the NCCL gradient path under `mpirun -np 1`;
# 5. DiT-XL/2 training throughput, float32 and bf16 autocast (largest batch
#    that fits), MFU against the GEMM rate measured in the same precision,
#    beside PyTorch eager (fp32, bf16 autocast) when it is importable.
#
# Prints a table at the end. Exits 77 (skip) when there is no GPU, 1 when a
# check fails. DIT_BATCH, DIT_STEPS, XL_BATCH override the sizes;
# DIFFUSE_CUDA_TF32=1 lets the products use TF32 (tolerance 3e-4).
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/_build-gpu}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
	echo "tests/gpu/run.sh: no GPU (nvidia-smi finds none): skipped"
	exit 77
fi
nvidia-smi -L

if [ -f "$src/config.status" ]; then
	echo "tests/gpu/run.sh: the source tree is configured in place; run 'make distclean' there first"
	exit 1
fi
jobs=$(nproc 2>/dev/null || echo 4)
rm -rf "$build" && mkdir -p "$build" || exit 1
log=$build/run.log
step() { printf '\n== %s\n' "$*" | tee -a "$log"; }

step "build (--with-cuda)"
start=$(date +%s)
if [ ! -x "$src/configure" ]; then (cd "$src" && autoreconf -fi) >>"$log" 2>&1 || exit 1; fi
(cd "$build" && "$src/configure" --with-cuda --with-mpi=auto >>"$log" 2>&1 && make -j"$jobs" >>"$log" 2>&1) || {
	tail -40 "$log"
	echo "tests/gpu/run.sh: the --with-cuda build failed"
	exit 1
}
echo "built in $(($(date +%s) - start)) s"
prog=$build/tests/gpu/test_cuda_ops
"$build/host/diffuse" --version

results=()
failed=0
# run NAME SECONDS ARGS...: one check under a time limit, output kept.
run() {
	local name=$1 limit=$2
	shift 2
	step "$name"
	local t0 rc
	t0=$(date +%s)
	timeout "$limit" "$@" 2>&1 | tee "$build/$name.out"
	rc=${PIPESTATUS[0]}
	local verdict=ok
	case $rc in
	0) ;;
	77) verdict=skip ;;
	124) verdict="FAIL (over ${limit} s)"; failed=1 ;;
	*) verdict="FAIL (exit $rc)"; failed=1 ;;
	esac
	results+=("$(printf '%-12s %-22s %5d s' "$name" "$verdict" $(($(date +%s) - t0)))")
	return "$rc"
}

dit_steps=${DIT_STEPS:-20}
dit_batch=${DIT_BATCH:-64}
# The CPU side of the DiT-S/2 check is the slowest part: it runs on the
# host's cores while the GPU checks run, and is compared at the end.
timeout 330 "$prog" dit-cpu "$dit_steps" "$dit_batch" "$build/dit-cpu.txt" >"$build/dit-cpu.log" 2>&1 &
cpu_job=$!

run ops 60 "$prog" ops
if [ $? -eq 77 ]; then
	kill "$cpu_job" 2>/dev/null
	echo "no usable CUDA device: skipped"
	exit 77
fi
DIFFUSE_CUDA_AUTOCAST=bf16 run ops-bf16 60 "$prog" ops
# bf16 again with attention through cuDNN's fused SDPA where it serves
# (head dims that are multiples of 8); it notes every shape it declines.
DIFFUSE_CUDA_AUTOCAST=bf16 DIFFUSE_CUDA_ATTENTION=fused run ops-fused 60 "$prog" ops
if grep -q "fused attention:" "$build/ops-fused.out"; then
	results+=("ops-fused    note: the fused attention declined a shape (see ops-fused.out)")
fi
# The stages: the cpu reference first, then each cuda run against it.
stages=$src/tests/gpu/stages.sh
for check in cpu fp32 bf16 fused resume sample nccl; do
	run "stage-$check" 60 "$stages" "$check" "$build"
done
run xl-fp32 90 "$prog" throughput DiT-XL/2 "${XL_BATCH:-0}"
DIFFUSE_CUDA_AUTOCAST=bf16 run xl-bf16 90 "$prog" throughput DiT-XL/2 "${XL_BATCH:-0}"

xl_batch=$(awk '/^RESULT diffuse/ {print $4}' "$build/xl-fp32.out" 2>/dev/null | head -1)
xl_batch=${xl_batch:-64}
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	for precision in fp32 bf16; do
		run "torch-$precision" 50 python3 "$src/tests/gpu/torch_dit.py" DiT-XL/2 "$xl_batch" "$precision"
	done
else
	results+=("torch        not importable here: no comparison")
fi

step "waiting for the CPU side of DiT-S/2"
wait "$cpu_job" || cat "$build/dit-cpu.log"
run dit-s2 120 "$prog" dit "$dit_steps" "$dit_batch" "$build/dit-cpu.txt"

printf '\n== summary\n'
printf '%-12s %-22s %7s\n' check result time
printf '%s\n' "${results[@]}"
printf '\n%-10s %-20s %7s %12s\n' who model batch images/s
cat "$build"/*.out 2>/dev/null | awk '/^RESULT/ {printf "%-10s %-20s %7s %12s\n", $2, $3, $4, $5}'
grep -h "final loss rel diff\|step time\|MFU" "$build"/*.out 2>/dev/null
grep -h "rel diff .*(tolerance\|^compare \|NCCL started" "$build"/stage-*.out 2>/dev/null
exit "$failed"
