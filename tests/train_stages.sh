#!/bin/sh
# The training and sampling stages through the diffuse program, on the
# stage fixtures (tests/plugins/stage_fixture.c) and the shapes dataset:
# resume equals an uninterrupted run byte for byte, a NaN loss names the
# step and the last good checkpoint, a sampler the objective cannot serve
# is refused at start, a checkpoint of another shape names the setting,
# and sampling writes what it says it writes.
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
export DIFFUSE_PLUGIN_PATH="$DF_TOP_BUILDDIR/tests/plugins/.libs/stage_fixture.so:$DIFFUSE_PLUGIN_PATH"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-train-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

cat >"$tmp/tiny.cfg" <<'CFG'
name = "tiny";
seed = 7;
threads = 1;
dataset = { plugin = "shapes"; size = 8; count = 24; };
backbone = { plugin = "pixel-mlp"; hidden = 16; };
objective = { plugin = "flow-fixture"; };
sampler = { plugin = "euler-fixture"; steps = 3; };
train = { batch = 5; lr = 1e-2; steps = 20; ema = 0.9; ema_warmup = true; warmup = 3;
          lr_schedule = "cosine"; grad_clip = 1.0; log_every = 5; checkpoint_every = 0;
          sample_every = 10; };
sample = { count = 6; batch = 4; cfg_scale = 2.0; };
CFG

# Resume: 20 steps in one go equals 10 + 10 (weights, EMA, moments, steps).
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/once"
grep_in out "step 20 of 20"
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/twice" --max-steps 10
grep_in out "step 10 of 20 (stopped early"
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/twice"
grep_in out "resuming"
grep_in out "at step 10"
if ! cmp -s "$tmp/once/tiny/checkpoint.safetensors" "$tmp/twice/tiny/checkpoint.safetensors"; then
	echo "FAIL: the resumed checkpoint differs from the uninterrupted one"
	failures=$((failures + 1))
fi
# A different run really differs (the comparison can fail).
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/other" -o seed=8
if cmp -s "$tmp/once/tiny/checkpoint.safetensors" "$tmp/other/tiny/checkpoint.safetensors"; then
	echo "FAIL: another seed made the same checkpoint"
	failures=$((failures + 1))
fi
# The log: one JSON line per log_every steps, with the split of the time.
lines=$(wc -l <"$tmp/once/tiny/log.jsonl")
[ "$lines" -eq 4 ] || { echo "FAIL: log.jsonl has $lines lines, expected 4"; failures=$((failures + 1)); }
for key in '"step":20' loss_by_t_quartile grad_norm '"lr"' images_per_s '"data"' '"forward"' '"backward"' '"optimiser"'; do
	grep -q -- "$key" "$tmp/once/tiny/log.jsonl" || { echo "FAIL: $key not in log.jsonl"; failures=$((failures + 1)); }
done
[ -f "$tmp/once/tiny/samples-000010.png" ] || { echo "FAIL: no grid at step 10"; failures=$((failures + 1)); }
[ -f "$tmp/once/tiny/samples.png" ] || { echo "FAIL: no final grid"; failures=$((failures + 1)); }

# NaN: stop, name the step and the last good checkpoint.
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/nan" -o objective.nan_at_step=12 \
	-o train.checkpoint_every=5
grep_in err "step 13: the loss is nan"
grep_in err "the last good checkpoint is $tmp/nan/tiny/checkpoint.safetensors (step 10)"

# An overflowing gradient under a finite loss: named by its tensor, the
# bad update never reaches a checkpoint.
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/inf" -o objective.inf_grad_at_step=7 \
	-o train.checkpoint_every=5
grep_in err "step 8: non-finite gradient: in.weight, element 0"
grep_in err "the last good checkpoint is $tmp/inf/tiny/checkpoint.safetensors (step 5)"

# A sampler that needs a velocity on an objective that cannot give one.
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/eps" -o objective.prediction=eps
grep_in err "sampler euler-fixture on objective flow-fixture: needs a velocity, but the model predicts eps"
expect 2 "$diffuse" check "$tmp/tiny.cfg" -o objective.prediction=eps
grep_in err "tiny.cfg:7: sampler euler-fixture on objective flow-fixture: needs a velocity"
expect 0 "$diffuse" check "$tmp/tiny.cfg"
expect 2 "$diffuse" check "$tmp/tiny.cfg" -o 'sample.cfg_interval=[0.8, 0.2]'
grep_in err "sample.cfg_interval: needs [lo, hi] with lo <= hi"
expect 0 "$diffuse" check "$tmp/tiny.cfg" -o 'sample.cfg_interval=[0.2, 0.8]'

# A checkpoint of another shape names the setting.
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/once" -o backbone.hidden=8 -o train.steps=30
grep_in err "backbone.hidden (checkpoint 16, pipeline 8)"

expect 1 "$diffuse" sample "$tmp/tiny.cfg" --checkpoint "$tmp/once/tiny/checkpoint.safetensors" --out "$tmp/g.png" \
	-o backbone.hidden=32
grep_in err "backbone.hidden (checkpoint 16, pipeline 32)"

# Ctrl-C: the step finishes, a checkpoint is saved, the exit status is 3.
expect_interrupted out "training tiny" "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/int" -o train.steps=100000000
grep_in err "interrupted at step"
[ -s "$tmp/int/tiny/checkpoint.safetensors" ] || { echo "FAIL: no checkpoint after SIGINT"; failures=$((failures + 1)); }

# Sampling from the checkpoint alone: grid, folder, raw tensors.
ckpt="$tmp/once/tiny/checkpoint.safetensors"
expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/grid.png"
grep_in out "6 samples from EMA weights (step 20), sampler euler-fixture, NFE 3, guidance 2 on all channels"
grep_in out "seed 7"
[ -s "$tmp/grid.png" ] || { echo "FAIL: no grid.png"; failures=$((failures + 1)); }
expect 0 "$diffuse" sample --checkpoint "$ckpt" --count 3 --out "$tmp/each" -o sample.weights=raw
grep_in out "3 samples from raw weights"
[ -f "$tmp/each/000002.png" ] || { echo "FAIL: no per-sample PNGs"; failures=$((failures + 1)); }
expect 0 "$diffuse" sample "$tmp/tiny.cfg" --checkpoint "$ckpt" --count 2 --out "$tmp/x0.safetensors" \
	-o sample.cfg_scale=1.0
grep_in out "no guidance"
grep -q '"x0"' "$tmp/x0.safetensors" || { echo "FAIL: x0 not in the output"; failures=$((failures + 1)); }
expect 2 "$diffuse" sample "$tmp/tiny.cfg" --checkpoint "$ckpt"
grep_in err "--out is required"

# --noise: x and y come from the file (here zeros, class 0), so two runs
# agree and the count follows the file.
header='{"x":{"dtype":"F32","shape":[2,1,8,8],"data_offsets":[0,512]},"y":{"dtype":"I64","shape":[2],"data_offsets":[512,528]}}'
len=${#header}
pad=$(( (8 - len % 8) % 8 ))
len=$((len + pad))
{
	printf "$(printf '\\%03o' $((len % 256)) $((len / 256)) 0 0 0 0 0 0)"
	printf '%s' "$header"
	printf '%*s' "$pad" ''
	head -c 528 /dev/zero
} >"$tmp/noise.safetensors"
expect 0 "$diffuse" sample --checkpoint "$ckpt" --noise "$tmp/noise.safetensors" --out "$tmp/n1.safetensors"
grep_in out "2 samples from EMA weights"
expect 0 "$diffuse" sample --checkpoint "$ckpt" --noise "$tmp/noise.safetensors" --out "$tmp/n2.safetensors"
cmp -s "$tmp/n1.safetensors" "$tmp/n2.safetensors" || { echo "FAIL: the same noise gave other samples"; failures=$((failures + 1)); }

# tensor_bytes FILE NAME: the raw bytes of one tensor of a safetensors file.
tensor_bytes() {
	hlen=$(od -An -tu8 -N8 "$1" | tr -d ' ')
	range=$(dd if="$1" bs=1 skip=8 count="$hlen" 2>/dev/null | grep -o "\"$2\":{[^}]*}" |
		sed 's/.*data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
	set -- "$1" $range
	dd if="$1" bs=1 skip=$((8 + hlen + $2)) count=$(($3 - $2)) 2>/dev/null
}
# The EMA copy of a frozen tensor (registered first, as DiT's pos_embed)
# is the tensor itself, and EMA samples differ from raw ones after training.
tensor_bytes "$ckpt" out_offset >"$tmp/frozen.raw"
tensor_bytes "$ckpt" ema.out_offset >"$tmp/frozen.ema"
[ -s "$tmp/frozen.raw" ] || { echo "FAIL: out_offset not found in the checkpoint"; failures=$((failures + 1)); }
cmp -s "$tmp/frozen.raw" "$tmp/frozen.ema" || { echo "FAIL: the EMA set holds another frozen tensor"; failures=$((failures + 1)); }
expect 0 "$diffuse" sample --checkpoint "$ckpt" --count 3 --out "$tmp/ema20.safetensors"
expect 0 "$diffuse" sample --checkpoint "$ckpt" --count 3 --out "$tmp/raw20.safetensors" -o sample.weights=raw
tensor_bytes "$tmp/ema20.safetensors" x0 >"$tmp/ema.x0"
tensor_bytes "$tmp/raw20.safetensors" x0 >"$tmp/raw.x0"
cmp -s "$tmp/ema.x0" "$tmp/raw.x0" && { echo "FAIL: EMA and raw samples agree after 20 steps"; failures=$((failures + 1)); }

# Without --checkpoint: the run folder's.
expect 0 "$diffuse" sample "$tmp/tiny.cfg" --runs-dir "$tmp/once" --count 2 --out "$tmp/r.png"
grep_in out "2 samples from EMA weights (step 20)"

# run: train then sample into the run folder.
expect 0 "$diffuse" run "$tmp/tiny.cfg" --runs-dir "$tmp/run"
[ -s "$tmp/run/tiny/samples.png" ] || { echo "FAIL: run wrote no samples.png"; failures=$((failures + 1)); }

[ "$failures" -eq 0 ] || exit 1
echo "train_stages: all passed"
