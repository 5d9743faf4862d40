#!/bin/sh
# REPA against the same SiT without it on Fashion-MNIST: same seed, data
# order, steps and settings; FD-FMNIST of raw weights after each step count.
# Short and single-threaded by design (a shared machine): batch 32, lr 5e-4,
# no EMA, Heun with 5 steps (NFE 9) and no guidance for the samples.
#
#   bench/repa-effect.sh RUNS_DIR [STEPS...]   (default steps: 100 200 300)
#
# Run from a built tree with the build's plugins on DIFFUSE_PLUGIN_PATH and
# DIFFUSE_DATA_DIR=data (the shipped fmnist-net weights). Prints one line
# per (pipeline, steps): CPU seconds of the training call, then the eval's
# summary; the training logs stay in RUNS_DIR/<name>/log.jsonl.
set -e
runs=${1:?usage: bench/repa-effect.sh RUNS_DIR [STEPS...]}
shift
steps=${*:-100 200 300}
count=${REPA_EFFECT_COUNT:-500}
for p in sit-linear-velocity sit-repa-fmnist; do
	for s in $steps; do
		/usr/bin/time -f "$p steps $s train cpu %U user %S sys %e wall" \
			nice -n 10 ./host/diffuse train "pipelines/$p.cfg" --runs-dir "$runs" \
			-o threads=1 -o train.steps="$s" -o train.batch=32 -o train.lr=5e-4 -o train.ema=0 \
			-o train.log_every=10 -o train.sample_every=0 -o train.checkpoint_every=0 \
			-o sampler.steps=5 -o sample.cfg_scale=1 -o sample.grid= >/dev/null
		echo "$p steps $s eval:"
		OMP_NUM_THREADS=1 nice -n 10 ./host/diffuse eval --checkpoint "$runs/$p/checkpoint.safetensors" \
			--count "$count" --metrics fd --no-reference --json
	done
done
