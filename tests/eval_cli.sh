#!/bin/sh
# diffuse eval and examples/sweep.sh: exit codes (0 done, 1 failure while
# running, 2 bad usage or pipeline), the table, the --json summary and the
# line appended to the run's log, on a tiny model trained for 2 steps.
# Skips (77) without the Debian Fashion-MNIST files.
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
pipeline="$DF_TOP_SRCDIR/pipelines/quickstart.cfg"
test -r /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || exit 77
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-eval-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
export DIFFUSE_DATA_DIR="$DF_TOP_SRCDIR/data"
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

# A tiny DiT of the quickstart pipeline: seconds, not minutes.
tiny="-o backbone.depth=1 -o backbone.hidden=32 -o backbone.heads=1 -o sampler.steps=2 -o sample.count=10
 -o sample.batch=10 -o train.batch=8 -o train.log_every=1 -o train.checkpoint_every=0"

# Usage errors: 2.
expect 2 "$diffuse" eval "$pipeline"
grep_in err "--checkpoint is required"
expect 2 "$diffuse" eval "$pipeline" --checkpoint "$tmp/none.safetensors" --metrics fd,nonesuch
grep_in err 'no metric named "nonesuch"'
expect 2 "$diffuse" eval "$pipeline" --checkpoint "$tmp/none.safetensors" --count 0
expect 2 "$diffuse" eval "$tmp/missing.cfg" --checkpoint "$tmp/none.safetensors"

# shellcheck disable=SC2086
expect 0 "$diffuse" train "$pipeline" $tiny -o train.steps=2 --runs-dir "$tmp/runs"
ckpt="$tmp/runs/quickstart/checkpoint.safetensors"

# A checkpoint that is not there: a failure while running, 1.
# shellcheck disable=SC2086
expect 1 "$diffuse" eval "$pipeline" $tiny --checkpoint "$tmp/none.safetensors" --count 20

# The table, then the --json summary alone on stdout.
# shellcheck disable=SC2086
expect 0 "$diffuse" eval "$pipeline" $tiny --checkpoint "$ckpt" --count 20 --metrics fd,prec-recall,class-acc,is
for figure in "fd " precision recall class_acc "is " floor ceiling "FD(test, train)"; do
	grep_in out "$figure"
done
grep -q '"eval":{' "$tmp/runs/quickstart/log.jsonl" || { echo "FAIL: no eval line in log.jsonl"; failures=$((failures + 1)); }
# shellcheck disable=SC2086
expect 0 "$diffuse" eval "$pipeline" $tiny --checkpoint "$ckpt" --count 20 --json --no-reference
test "$(wc -l <"$tmp/out")" -eq 1 || { echo "FAIL: --json printed more than one line"; failures=$((failures + 1)); }
grep_in out '"command":"eval"'
grep_in out '"fd":'
grep_in out '"made_by":"20 samples from EMA weights'
grep_in err "precision"
# The summary's keys, by a JSON parser: the samples' settings and the figures.
json_has command='"eval"' status='"done"' exit=0 stages='["eval"]' checkpoint="\"$ckpt\"" \
	run_dir="\"$tmp/runs/quickstart\"" count=20 real=20 metrics.fd metrics.precision metrics.recall \
	metrics.class_acc samples.0.path="\"$tmp/runs/quickstart/eval-samples.safetensors\"" samples.0.count=20 \
	samples.0.step=2 samples.0.weights='"ema"' samples.0.sampler.name='"euler"' samples.0.sampler.steps=2 \
	samples.0.nfe=2 samples.0.guidance.scale=2.0 samples.0.guidance.interval='[0.0,1.0]' samples.0.seed=0
fd=$(sed -n 's/.*"fd":\([-0-9.eE+]*\).*/\1/p' "$tmp/out")

# --weights: plain weights under the official names (here the checkpoint's
# EMA set, as another trainer exports it) generate the same samples, so
# the same FD; the summary names them and says raw.
"$DF_TOP_BUILDDIR/tests/ema_weights" "$ckpt" "$tmp/ema.safetensors" || exit 99
# shellcheck disable=SC2086
expect 0 "$diffuse" eval "$pipeline" $tiny --weights "$tmp/ema.safetensors" --count 20 --json --no-reference
json_has weights="\"$tmp/ema.safetensors\"" samples.0.weights='"raw"' metrics.fd="$fd"
expect 2 "$diffuse" eval "$pipeline" --weights "$tmp/ema.safetensors" --checkpoint "$ckpt"
grep_in err "not both"
expect 2 "$diffuse" eval --weights "$tmp/ema.safetensors"
# shellcheck disable=SC2086
expect 1 "$diffuse" eval "$pipeline" $tiny --weights "$ckpt" --count 20 --json --no-reference
json_has status='"failed"' exit=1 error
# The fd statistics of the test images are cached in the run folder and
# reused by the next evaluation of the same size.
test -f "$tmp/runs/quickstart/reference-fd-test-20.safetensors" || { echo "FAIL: no cached statistics"; failures=$((failures + 1)); }
# shellcheck disable=SC2086
expect 0 "$diffuse" eval "$pipeline" $tiny --checkpoint "$ckpt" --count 20 --metrics fd --no-reference
grep_in out "come from the run folder"
grep_in out "fd statistics cached"

# The sweep example, at a test's size: three runs and their table.
expect 0 env DIFFUSE="$diffuse" RUNS="$tmp/sweep" COUNT=20 STEPS=2 EXTRA="$tiny" \
	"$DF_TOP_SRCDIR/examples/sweep.sh" "$pipeline"
for objective in velocity score noise; do
	grep_in out "$objective "
done
grep_in out "class_acc"
# A failing command stops the sweep with its status.
expect 2 env DIFFUSE="$diffuse" RUNS="$tmp/sweep" OBJECTIVES=nonesuch "$DF_TOP_SRCDIR/examples/sweep.sh" "$pipeline"

echo "$failures failure(s)"
test "$failures" -eq 0
