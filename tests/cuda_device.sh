#!/bin/sh
# device = "cuda" where no GPU can run it: the training and sampling stages
# stop at start with one line naming the cause, and write nothing.
#
# A build without the CUDA backend checks its own one-line refusal and
# skips (77): the GPU case needs configure --with-cuda. A CUDA build on a
# machine with a usable GPU skips too (tests/gpu/run.sh covers that).
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
export DIFFUSE_PLUGIN_PATH="$DF_TOP_BUILDDIR/tests/plugins/.libs/stage_fixture.so:$DIFFUSE_PLUGIN_PATH"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-cuda-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

cat >"$tmp/tiny.cfg" <<'CFG'
name = "tiny";
seed = 7;
threads = 1;
device = "cuda";
dataset = { plugin = "shapes"; size = 8; count = 24; };
backbone = { plugin = "pixel-mlp"; hidden = 16; };
objective = { plugin = "flow-fixture"; };
sampler = { plugin = "euler-fixture"; steps = 3; };
train = { batch = 4; steps = 2; checkpoint_every = 0; sample_every = 0; };
sample = { count = 4; batch = 4; };
CFG

# one_line FILE: the error is exactly one line.
one_line() {
	lines=$(wc -l <"$tmp/$1")
	if [ "$lines" -ne 1 ]; then
		echo "FAIL: $1 has $lines lines, expected one:"
		sed 's/^/  /' "$tmp/$1"
		failures=$((failures + 1))
	fi
}

# no_checkpoint DIR: a refused start leaves no checkpoint behind.
no_checkpoint() {
	if [ -e "$tmp/$1/tiny/checkpoint.safetensors" ]; then
		echo "FAIL: a refused start wrote $1/tiny/checkpoint.safetensors"
		failures=$((failures + 1))
	fi
}

expect 0 "$diffuse" --version
if ! grep -q "^backends:.*cuda" "$tmp/out"; then
	expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/runs"
	grep_in err "device cuda: this build has no CUDA backend (configure --with-cuda)"
	one_line err
	no_checkpoint runs
	[ "$failures" -eq 0 ] || exit 1
	echo "cuda_device: no CUDA backend in this build: skipped"
	exit 77
fi

if "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/probe" >"$tmp/out" 2>"$tmp/err"; then
	echo "cuda_device: a GPU is usable here (tests/gpu/run.sh checks it): skipped"
	exit 77
fi
# Training, and sampling from a checkpoint a CPU run made.
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/runs"
grep_in err "device cuda: "
one_line err
no_checkpoint runs
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/cpu" -o device=cpu
expect 1 "$diffuse" sample --checkpoint "$tmp/cpu/tiny/checkpoint.safetensors" --out "$tmp/samples.png" -o device=cuda
grep_in err "device cuda: "
one_line err
[ -e "$tmp/samples.png" ] && { echo "FAIL: a refused sample run wrote samples.png"; failures=$((failures + 1)); }

[ "$failures" -eq 0 ] || exit 1
echo "cuda_device: all passed"
