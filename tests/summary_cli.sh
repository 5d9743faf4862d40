#!/bin/sh
# The --json summary of run, train and sample (eval's: tests/eval_cli.sh),
# checked key by key with tests/json_check, and every command's exit codes:
# 0 done, 1 failure while running, 2 bad usage or pipeline (nothing on
# stdout), 3 interrupted and checkpointed. On the stage fixtures: seconds.
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
export DIFFUSE_PLUGIN_PATH="$DF_TOP_BUILDDIR/tests/plugins/.libs/stage_fixture.so:$DIFFUSE_PLUGIN_PATH"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-summary-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

# stdout_empty: a usage error prints no summary.
stdout_empty() {
	if [ -s "$tmp/out" ]; then
		echo "FAIL: stdout is not empty:"
		sed 's/^/  /' "$tmp/out"
		failures=$((failures + 1))
	fi
}

cat >"$tmp/tiny.cfg" <<'CFG'
name = "tiny";
seed = 7;
threads = 1;
dataset = { plugin = "shapes"; size = 8; count = 24; };
backbone = { plugin = "pixel-mlp"; hidden = 16; };
objective = { plugin = "flow-fixture"; };
sampler = { plugin = "euler-fixture"; steps = 3; };
train = { batch = 5; lr = 1e-2; steps = 20; ema = 0.9; warmup = 3; log_every = 5; checkpoint_every = 0;
          sample_every = 10; };
sample = { count = 6; batch = 4; cfg_scale = 2.0; cfg_interval = [0.1, 0.9]; };
CFG
run="$tmp/runs/tiny"

# train: the run folder, the last checkpoint, every grid with its settings;
# the news on stderr.
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/runs" --json
json_has command='"train"' status='"done"' exit=0 stages='["train"]' run_dir="\"$run\"" \
	checkpoint="\"$run/checkpoint.safetensors\"" step=20 \
	samples.0.path="\"$run/samples-000010.png\"" samples.0.step=10 \
	samples.1.path="\"$run/samples.png\"" samples.1.step=20 samples.1.weights='"ema"' \
	samples.1.sampler.name='"euler-fixture"' samples.1.sampler.steps=3 samples.1.nfe=3 \
	samples.1.guidance.scale=2.0 samples.1.guidance.interval='[0.10000000000000001,0.90000000000000002]' \
	samples.1.seed=7 samples.1.count
grep_in err "step 20 of 20"
# Without --json the news stays on stdout.
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/plain" --max-steps 5
grep_in out "step 5 of 20"

# sample: from the checkpoint alone, raw weights, no guidance, a count.
expect 0 "$diffuse" sample --checkpoint "$run/checkpoint.safetensors" --count 2 --out "$tmp/x0.safetensors" \
	-o sample.weights=raw -o sample.cfg_scale=1.0 --json
json_has command='"sample"' status='"done"' stages='["sample"]' run_dir="\"$run\"" \
	checkpoint="\"$run/checkpoint.safetensors\"" samples.0.path="\"$tmp/x0.safetensors\"" samples.0.count=2 \
	samples.0.weights='"raw"' samples.0.guidance.scale=1.0 samples.0.step=20 samples.0.seed=7
grep_in err "2 samples from raw weights"

# run: a pipeline with only a sample section samples the run's checkpoint.
sed '/^train = /,/^          sample_every/d' "$tmp/tiny.cfg" >"$tmp/sample-only.cfg"
expect 0 "$diffuse" run "$tmp/sample-only.cfg" --runs-dir "$tmp/runs" --json
json_has command='"run"' status='"done"' stages='["sample"]' checkpoint="\"$run/checkpoint.safetensors\"" \
	samples.0.path="\"$run/samples.png\"" samples.0.count=6 samples.0.sampler.name='"euler-fixture"'
# run with a train section trains (and writes the final grid).
expect 0 "$diffuse" run "$tmp/tiny.cfg" --runs-dir "$tmp/runs2" -o train.sample_every=0 --json
json_has command='"run"' stages='["train"]' step=20 samples.0.path="\"$tmp/runs2/tiny/samples.png\""

# 1: a failure while running; the summary says what and where.
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/nan" -o objective.nan_at_step=12 \
	-o train.checkpoint_every=5 --json
json_has status='"failed"' exit=1 error checkpoint="\"$tmp/nan/tiny/checkpoint.safetensors\"" step=10
grep_in err "step 13: the loss is nan"
expect 1 "$diffuse" sample "$tmp/tiny.cfg" --checkpoint "$tmp/none.safetensors" --out "$tmp/g.png" --json
json_has status='"failed"' exit=1 samples='[]'
touch "$tmp/file"
expect 1 "$diffuse" run "$tmp/tiny.cfg" --runs-dir "$tmp/file/runs" --json
json_has status='"failed"' exit=1 error
expect 1 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/file/runs"

# 2: bad usage or pipeline: nothing ran, nothing on stdout.
printf 'name = "s";\ndataset = { plugin = "shapes"; size = 8; };\n' >"$tmp/no-train.cfg"
expect 2 "$diffuse" train "$tmp/no-train.cfg" --runs-dir "$tmp/runs" --json
grep_in err "has no train section"
stdout_empty
expect 2 "$diffuse" train "$tmp/tiny.cfg" --max-steps 0 --json
stdout_empty
expect 2 "$diffuse" train "$tmp/tiny.cfg" -o train.nonesuch=1 --json
stdout_empty
expect 2 "$diffuse" run "$tmp/tiny.cfg" --bogus --json
stdout_empty
expect 2 "$diffuse" run --json
expect 2 "$diffuse" sample "$tmp/tiny.cfg" --json
grep_in err "--out is required"
stdout_empty
expect 2 "$diffuse" sample "$tmp/tiny.cfg" --checkpoint a.safetensors --weights b.safetensors --out "$tmp/g.png"
grep_in err "not both"
expect 2 "$diffuse" sample "$tmp/tiny.cfg" --count 0 --out "$tmp/g.png"
expect 2 "$diffuse" forward
expect 2 "$diffuse" plugins extra
expect 2 "$diffuse" help a b

# 3: interrupted (Ctrl-C) after saving; the summary says so.
for command in train run; do
	expect_interrupted err "training tiny" "$diffuse" "$command" "$tmp/tiny.cfg" --runs-dir "$tmp/int-$command" \
		-o train.steps=100000000 --json
	json_has command="\"$command\"" status='"interrupted"' exit=3 error \
		checkpoint="\"$tmp/int-$command/tiny/checkpoint.safetensors\"" step
done

# Every command's help states the exit codes and --json where it has it.
for command in run train sample eval; do
	expect 0 "$diffuse" help "$command"
	grep_in out "--json"
	grep_in out "Exit status"
done
expect 0 "$diffuse" --help
grep_in out "3 interrupted"

echo "$failures failure(s)"
test "$failures" -eq 0
