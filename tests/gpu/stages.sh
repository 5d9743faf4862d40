#!/usr/bin/env bash
# The training and sampling stages with device = "cuda", one check per
# call, for tests/gpu/run.sh:
#
#   tests/gpu/stages.sh CHECK BUILD_DIR
#
#   cpu      20 steps of a small DiT on the shapes dataset on the cpu: the
#            reference the others compare with
#   fp32     the same on cuda (float32): loss of step 1 and step 20 against
#            the cpu run
#   bf16     the same under bf16 autocast, with the bf16 tolerance
#   fused    bf16 autocast with attention through cuDNN's fused SDPA
#            (DIFFUSE_CUDA_ATTENTION=fused): the bf16 tolerance, and the
#            fused path must not have declined or failed
#   resume   cuda, 10 steps, then resumed to 20: the checkpoint (weights,
#            EMA set, AdamW moments) equals the uninterrupted fp32 run's
#   sample   EMA sampling from the cpu run's checkpoint on cuda and on the
#            cpu (guidance on): the samples agree
#   nccl     (built with MPI and NCCL) the fp32 run under mpirun -np 1: the
#            gradient goes through ncclAllReduce; the checkpoint equals the
#            plain fp32 run's
#
# Exits 0 when the check passes, 1 when it fails, 77 when it cannot run
# here (no mpirun or no NCCL for nccl).
set -uo pipefail
check=${1:?usage: stages.sh CHECK BUILD_DIR}
build=${2:?usage: stages.sh CHECK BUILD_DIR}
diffuse=$build/host/diffuse
compare=$build/tests/gpu/test_cuda_ops
dir=$build/stages
mkdir -p "$dir"
# The plugins of the build tree (nothing is installed).
DIFFUSE_PLUGIN_PATH=$(find "$build/plugins" -path '*/.libs/*.so' -printf '%h\n' | sort -u | paste -sd: -)
export DIFFUSE_PLUGIN_PATH

cat >"$dir/tiny.cfg" <<'CFG'
name = "tiny";
seed = 3;
threads = 4;
dataset = { plugin = "shapes"; size = 32; count = 256; channels = 3; };
backbone = { plugin = "dit"; model = "custom"; depth = 2; hidden = 128; heads = 4; patch = 4; };
objective = { plugin = "velocity"; path = "linear"; };
sampler = { plugin = "euler"; steps = 8; };
train = { batch = 32; lr = 1e-3; steps = 20; warmup = 2; ema = 0.99; ema_warmup = true; class_dropout = 0.1;
          grad_clip = 1.0; log_every = 1; checkpoint_every = 0; sample_every = 0; };
sample = { count = 16; batch = 16; cfg_scale = 2.0; grid = ""; };
CFG

# train NAME [ARGS...]: a fresh run into $dir/NAME.
train() {
	local name=$1
	shift
	rm -rf "${dir:?}/$name"
	"$diffuse" train "$dir/tiny.cfg" --runs-dir "$dir/$name" "$@"
}

# loss_at NAME STEP: the logged loss of a run at a step.
loss_at() {
	sed -n "s/.*\"step\":$2,\"loss\":\([^,]*\),.*/\1/p" "$dir/$1/tiny/log.jsonl" | tail -1
}

# close NAME STEP TOL: the run's loss at STEP against the cpu run's.
close() {
	local mine ref
	mine=$(loss_at "$1" "$2")
	ref=$(loss_at cpu "$2")
	if [ -z "$mine" ] || [ -z "$ref" ]; then
		echo "FAIL: no loss logged at step $2 (run $1: '$mine', cpu: '$ref')"
		return 1
	fi
	awk -v a="$mine" -v b="$ref" -v tol="$3" -v what="$1 step $2" 'BEGIN {
		d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; r = s > 0 ? d / s : d;
		ok = r <= tol;
		printf "%s: loss %.7g, cpu %.7g, rel diff %.3g (tolerance %g): %s\n", what, a, b, r, tol, ok ? "ok" : "FAIL";
		exit !ok }'
}

need_cpu() {
	[ -s "$dir/cpu/tiny/log.jsonl" ] || { echo "FAIL: the cpu run is missing (run 'stages.sh cpu' first)"; exit 1; }
}

# Tolerances against the cpu: float32 products, or TF32 when allowed.
if [ "${DIFFUSE_CUDA_TF32:-}" = 1 ]; then fp32_first=1e-3 fp32_last=1e-2; else fp32_first=1e-4 fp32_last=2e-3; fi

case $check in
cpu)
	train cpu -o device=cpu || exit 1
	echo "cpu: loss $(loss_at cpu 1) at step 1, $(loss_at cpu 20) at step 20"
	;;
fp32)
	need_cpu
	train fp32 -o device=cuda || exit 1
	close fp32 1 "$fp32_first" && close fp32 20 "$fp32_last" || exit 1
	;;
bf16)
	need_cpu
	DIFFUSE_CUDA_AUTOCAST=bf16 train bf16 -o device=cuda || exit 1
	close bf16 1 2e-2 && close bf16 20 5e-2 || exit 1
	;;
fused)
	need_cpu
	DIFFUSE_CUDA_AUTOCAST=bf16 DIFFUSE_CUDA_ATTENTION=fused train fused -o device=cuda >"$dir/fused.log" 2>&1
	rc=$?
	cat "$dir/fused.log"
	[ $rc -eq 0 ] || exit 1
	if ! grep -q "attention fused (cuDNN)" "$dir/fused.log"; then
		echo "FAIL: the context does not say the fused attention is on"
		exit 1
	fi
	if grep -q "fused attention:" "$dir/fused.log"; then
		echo "FAIL: the fused attention declined or failed (the plain path ran)"
		exit 1
	fi
	close fused 1 2e-2 && close fused 20 5e-2 || exit 1
	;;
resume)
	[ -s "$dir/fp32/tiny/checkpoint.safetensors" ] || { echo "FAIL: run 'stages.sh fp32' first"; exit 1; }
	train resume -o device=cuda --max-steps 10 || exit 1
	"$diffuse" train "$dir/tiny.cfg" --runs-dir "$dir/resume" -o device=cuda || exit 1
	"$compare" compare "$dir/fp32/tiny/checkpoint.safetensors" "$dir/resume/tiny/checkpoint.safetensors" 1e-4 || exit 1
	;;
sample)
	need_cpu
	ckpt=$dir/cpu/tiny/checkpoint.safetensors
	"$diffuse" sample --checkpoint "$ckpt" --out "$dir/sample-cpu.safetensors" -o device=cpu || exit 1
	"$diffuse" sample --checkpoint "$ckpt" --out "$dir/sample-cuda.safetensors" -o device=cuda || exit 1
	"$compare" compare "$dir/sample-cpu.safetensors" "$dir/sample-cuda.safetensors" 1e-3 x0 || exit 1
	;;
nccl)
	command -v mpirun >/dev/null 2>&1 || { echo "no mpirun: skipped"; exit 77; }
	grep -q "NCCL allreduce \.* yes" "$build/run.log" 2>/dev/null || { echo "built without NCCL: skipped"; exit 77; }
	[ -s "$dir/fp32/tiny/checkpoint.safetensors" ] || { echo "FAIL: run 'stages.sh fp32' first"; exit 1; }
	rm -rf "$dir/nccl"
	export NCCL_DEBUG=INFO
	# Open MPI passes the environment with -x and wants a flag to run as
	# root; other starters (MPICH's hydra) pass it all by default.
	mpirun=(mpirun -np 1)
	if mpirun --version 2>&1 | grep -q "Open MPI"; then
		mpirun+=(--allow-run-as-root --bind-to none -x NCCL_DEBUG -x DIFFUSE_PLUGIN_PATH)
		[ -n "${DIFFUSE_CUDA_AUTOCAST:-}" ] && mpirun+=(-x DIFFUSE_CUDA_AUTOCAST)
		[ -n "${DIFFUSE_CUDA_TF32:-}" ] && mpirun+=(-x DIFFUSE_CUDA_TF32)
	fi
	"${mpirun[@]}" "$diffuse" train "$dir/tiny.cfg" --runs-dir "$dir/nccl" -o device=cuda >"$dir/nccl.log" 2>&1
	rc=$?
	grep -v "NCCL INFO" "$dir/nccl.log"
	[ $rc -eq 0 ] || exit 1
	if ! grep -q "NCCL INFO.*[Ii]nit" "$dir/nccl.log"; then
		echo "FAIL: NCCL did not start (no 'NCCL INFO ... init' line in $dir/nccl.log)"
		exit 1
	fi
	echo "NCCL started: $(grep -c 'NCCL INFO' "$dir/nccl.log") NCCL INFO lines"
	"$compare" compare "$dir/fp32/tiny/checkpoint.safetensors" "$dir/nccl/tiny/checkpoint.safetensors" 1e-4 || exit 1
	;;
*)
	echo "stages.sh: unknown check $check"
	exit 2
	;;
esac
