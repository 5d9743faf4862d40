#!/bin/sh
# REPA through the diffuse program: the objective and the encoders are
# listed and described; a tiny REPA run trains, stores the projector in the
# checkpoint beside the backbone, resumes with it, and samples without the
# encoder's weights (the shipped fmnist-net file is hidden from sampling).
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-repa-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

expect 0 "$diffuse" plugins
grep_in out "objective  repa"
grep_in out "encoder    fmnist-features"
grep_in out "encoder    dinov2"
expect 0 "$diffuse" help repa
for setting in base base_settings encoder encoder_settings proj_coeff encoder_depth projector_dim; do
	grep_in out "  $setting "
done
grep_in out "0.5"
expect 0 "$diffuse" help dinov2
grep_in out "weights"
expect 0 "$diffuse" check "$DF_TOP_SRCDIR/pipelines/sit-repa-fmnist.cfg"
expect 2 "$diffuse" check "$DF_TOP_SRCDIR/pipelines/sit-repa-fmnist.cfg" -o objective.encoder=dinov3
grep_in err "dinov3"

cat >"$tmp/tiny.cfg" <<'CFG'
name = "tiny-repa";
seed = 3;
threads = 1;
dataset = { plugin = "shapes"; size = 32; count = 16; channels = 1; };
backbone = { plugin = "sit"; model = "custom"; depth = 2; hidden = 32; heads = 2; patch = 8; learn_sigma = false; };
objective = { plugin = "repa"; encoder_depth = 1; projector_dim = 16; };
sampler = { plugin = "euler"; steps = 2; };
train = { batch = 4; lr = 1e-3; steps = 2; sample_every = 0; checkpoint_every = 0; log_every = 1; };
sample = { count = 4; batch = 4; grid = ""; };
CFG
run="$tmp/runs/tiny-repa"
DIFFUSE_DATA_DIR="$DF_TOP_SRCDIR/data" expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/runs"
# the projector's weights and moments beside the backbone's
for name in objective.projectors.0.0.weight objective.projectors.0.4.bias opt.m.objective.projectors.0.2.weight; do
	if ! head -c 65536 "$run/checkpoint.safetensors" | grep -qaF "\"$name\""; then
		echo "FAIL: $name is not in the checkpoint"
		failures=$((failures + 1))
	fi
done
DIFFUSE_DATA_DIR="$DF_TOP_SRCDIR/data" expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/runs" \
	-o train.steps=3
grep_in out "resuming"
# sampling and evaluation never load the encoder
mkdir -p "$tmp/empty"
DIFFUSE_DATA_DIR="$tmp/empty" expect 0 "$diffuse" sample --checkpoint "$run/checkpoint.safetensors" --count 4 \
	--out "$tmp/s.png"
[ -s "$tmp/s.png" ] || { echo "FAIL: no samples"; failures=$((failures + 1)); }

[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "repa cli: ok"
