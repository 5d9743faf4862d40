#!/bin/sh
# diffuse encode and autoencode on a tiny vae over the synthetic shapes,
# and `diffuse check` on the latent pipelines.
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-latent-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# run STATUS TEXT COMMAND...: COMMAND must exit with STATUS and print TEXT
# (a fixed string; "" for anything) on stdout or stderr.
run() {
	want=$1
	text=$2
	shift 2
	"$@" >"$tmp/log" 2>&1
	got=$?
	if [ "$got" != "$want" ] || ! grep -qF -- "$text" "$tmp/log"; then
		echo "FAIL: exit $got (expected $want), looking for \"$text\": $*"
		sed 's/^/  /' "$tmp/log"
		failures=$((failures + 1))
	fi
}

# must_exist FILE
must_exist() {
	[ -s "$1" ] || { echo "FAIL: $1 was not written"; failures=$((failures + 1)); }
}

cat >"$tmp/tiny-vae.cfg" <<'CFG'
name = "tiny-vae";
seed = 1;
dataset = { plugin = "shapes"; size = 16; count = 40; channels = 3; };
encoder = { plugin = "vae"; ch = 8; ch_mult = [1, 2]; num_res_blocks = 1; z_channels = 2; groups = 4;
            posterior = "sample"; scale_factor = 0.5; };
train = { batch = 4; lr = 1e-3; steps = 3; log_every = 1; };
CFG

run 0 "training-data reconstruction PSNR:" "$diffuse" autoencode "$tmp/tiny-vae.cfg" --runs-dir "$tmp/runs"
must_exist "$tmp/runs/tiny-vae/encoder.safetensors"
psnr_line=$(grep "reconstruction PSNR:" "$tmp/log")

# diffuse eval of the autoencoder's pipeline prints the same figure for
# those weights (posterior = sample in the file: eval takes the mode, as
# autoencode does), or one JSON object with --json.
run 0 "$psnr_line" "$diffuse" eval "$tmp/tiny-vae.cfg" --checkpoint "$tmp/runs/tiny-vae/encoder.safetensors"
run 0 '"metrics":{"psnr":' "$diffuse" eval "$tmp/tiny-vae.cfg" --checkpoint "$tmp/runs/tiny-vae/encoder.safetensors" --json
# The figure is the checkpoint's: weights trained for one step give another.
run 0 "" "$diffuse" autoencode "$tmp/tiny-vae.cfg" --runs-dir "$tmp/fresh" -o train.steps=1
run 0 "reconstruction PSNR:" "$diffuse" eval "$tmp/tiny-vae.cfg" --checkpoint "$tmp/fresh/tiny-vae/encoder.safetensors"
if grep -qF -- "$psnr_line" "$tmp/log"; then
	echo "FAIL: weights trained for 1 and for 3 steps give the same PSNR"
	failures=$((failures + 1))
fi
run 1 "cannot open" "$diffuse" eval "$tmp/tiny-vae.cfg" --checkpoint "$tmp/missing.safetensors"

# The trained weights load by name; the cache holds latents, labels and the posterior.
run 0 "40 latents (2, 8, 8) from encoder vae, with the posterior's mean and logvar" \
	"$diffuse" encode "$tmp/tiny-vae.cfg" --runs-dir "$tmp/runs" -o "encoder.weights=$tmp/runs/tiny-vae/encoder.safetensors"
must_exist "$tmp/runs/tiny-vae/latents.safetensors"

# Training reads the cache (the trained weights decode the sample grid).
cat >"$tmp/tiny-ldm.cfg" <<CFG
name = "tiny-ldm";
seed = 1;
dataset = { plugin = "shapes"; size = 16; count = 40; channels = 3; };
encoder = { plugin = "vae"; ch = 8; ch_mult = [1, 2]; num_res_blocks = 1; z_channels = 2; groups = 4;
            posterior = "sample"; scale_factor = 0.5; weights = "$tmp/runs/tiny-vae/encoder.safetensors";
            cache = "$tmp/runs/tiny-vae/latents.safetensors"; };
backbone = { plugin = "unet"; model_channels = 16; channel_mult = [1, 2]; num_res_blocks = 1; groups = 8;
             attention_resolutions = [2]; num_head_channels = 8; use_spatial_transformer = true;
             context_dim = 8; class_cond = "context"; };
objective = { plugin = "ddpm"; };
sampler = { plugin = "ddpm"; steps = 4; };
train = { batch = 4; steps = 2; };
sample = { count = 3; };
CFG
run 0 "samples.png" "$diffuse" run "$tmp/tiny-ldm.cfg" --runs-dir "$tmp/runs"
must_exist "$tmp/runs/tiny-ldm/samples.png"

# Resume with a sampled posterior and no cache: the vae's draws are keyed by
# the training step and each image's index, so 20 steps in one go equal
# 10 + 10 byte for byte.
cat >"$tmp/resume.cfg" <<CFG
name = "resume";
seed = 3;
threads = 1;
dataset = { plugin = "shapes"; size = 16; count = 24; channels = 3; };
encoder = { plugin = "vae"; ch = 8; ch_mult = [1, 2]; num_res_blocks = 1; z_channels = 2; groups = 4;
            posterior = "sample"; weights = "$tmp/runs/tiny-vae/encoder.safetensors"; };
backbone = { plugin = "unet"; model_channels = 8; channel_mult = [1]; num_res_blocks = 1; groups = 4;
             attention_resolutions = []; num_head_channels = 8; };
objective = { plugin = "ddpm"; schedule = "scaled_linear"; };
train = { batch = 4; lr = 1e-2; steps = 20; checkpoint_every = 0; sample_every = 0; };
CFG
run 0 "step 20 of 20" "$diffuse" train "$tmp/resume.cfg" --runs-dir "$tmp/once"
run 0 "step 10 of 20" "$diffuse" train "$tmp/resume.cfg" --runs-dir "$tmp/twice" --max-steps 10
run 0 "at step 10" "$diffuse" train "$tmp/resume.cfg" --runs-dir "$tmp/twice"
if ! cmp -s "$tmp/once/resume/checkpoint.safetensors" "$tmp/twice/resume/checkpoint.safetensors"; then
	echo "FAIL: with posterior = sample, 10 + 10 steps differ from 20"
	failures=$((failures + 1))
fi
# The comparison can fail: the posterior's noise (its seed) changes the run.
run 0 "step 20 of 20" "$diffuse" train "$tmp/resume.cfg" --runs-dir "$tmp/other" -o encoder.seed=4
if cmp -s "$tmp/once/resume/checkpoint.safetensors" "$tmp/other/resume/checkpoint.safetensors"; then
	echo "FAIL: another posterior seed made the same checkpoint"
	failures=$((failures + 1))
fi

# Weights of another shape are refused by name, with exit status 2.
run 2 "in the file but" "$diffuse" encode "$tmp/tiny-vae.cfg" --runs-dir "$tmp/runs" -o encoder.z_channels=3 \
	-o "encoder.weights=$tmp/runs/tiny-vae/encoder.safetensors"

# An encoder without a loss of its own cannot be autoencoded.
cat >"$tmp/pixel.cfg" <<'CFG'
name = "pixel";
dataset = { plugin = "shapes"; size = 16; count = 8; };
encoder = { plugin = "pixel"; };
train = { batch = 4; steps = 1; };
CFG
run 2 "has no training loss of its own" "$diffuse" autoencode "$tmp/pixel.cfg" --runs-dir "$tmp/runs"

for cfg in vae-fmnist ldm-unet-fmnist ldm-dit-fmnist ldm-dit-s2-256; do
	run 0 ": ok" "$diffuse" check "$DF_TOP_SRCDIR/pipelines/latent/$cfg.cfg"
done

[ "$failures" = 0 ] && echo "latent CLI: all checks passed"
[ "$failures" = 0 ]
