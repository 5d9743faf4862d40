#!/bin/sh
# Data-parallel training under mpirun (built with --with-mpi; else skip):
# two ranks with a global batch of 16 equal one process bit for bit in the
# deterministic reduction and within float tolerance in the mean one; a
# checkpoint resumes under another number of ranks; a batch that does not
# divide is refused; a killed rank ends the job in bounded time, naming
# the rank, and the last checkpoint stays loadable. Sampling and evaluation
# split across the ranks give one process's samples and figures exactly.
set -u
grep -q '^#define DF_HAVE_MPI 1' "$DF_TOP_BUILDDIR/config.h" || { echo "SKIP: built without MPI"; exit 77; }
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: no mpirun"; exit 77; }
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
export DIFFUSE_PLUGIN_PATH="$DF_TOP_BUILDDIR/tests/plugins/.libs/stage_fixture.so:$DIFFUSE_PLUGIN_PATH"
# The shipped feature network of the metrics.
export DIFFUSE_DATA_DIR="$DF_TOP_SRCDIR/data"
# One thread per rank: the kernels then sum in the same order everywhere.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# Containers often forbid the cross-process memory copies of shared memory.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# OpenMPI leaves its own allocations at exit (in components it unloads, so
# no suppression can name them): sanitizer builds check leaks only in the
# single-process runs.
mpirun="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --oversubscribe --allow-run-as-root"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-mpi-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

expect() {
	want=$1
	shift
	timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	if [ "$got" != "$want" ]; then
		fail "exit $got, expected $want: $*"
		sed 's/^/  stdout: /' "$tmp/out"
		sed 's/^/  stderr: /' "$tmp/err"
	fi
}

grep_in() {
	grep -qF -- "$2" "$tmp/$1" || { fail "\"$2\" not in $1 of the last command:"; sed 's/^/  /' "$tmp/$1"; }
}

same() {
	cmp -s "$1/tiny/checkpoint.safetensors" "$2/tiny/checkpoint.safetensors" || fail "$3"
}

# The value of "key" in the last line of a run's log.
last() {
	tail -n 1 "$1/tiny/log.jsonl" | sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p"
}

cat >"$tmp/tiny.cfg" <<'CFG'
name = "tiny";
seed = 7;
threads = 1;
dataset = { plugin = "shapes"; size = 8; count = 40; };
backbone = { plugin = "pixel-mlp"; hidden = 16; };
objective = { plugin = "flow-fixture"; };
sampler = { plugin = "euler-fixture"; steps = 3; };
train = { batch = 16; lr = 1e-2; steps = 20; ema = 0.9; ema_warmup = true; warmup = 3;
          lr_schedule = "cosine"; grad_clip = 1.0; log_every = 5; checkpoint_every = 0; };
sample = { count = 4; batch = 4; grid = ""; };
CFG
det="-o train.reduce=deterministic -o train.micro_batch=8"

# Deterministic: one process in two passes of 8 equals two ranks of 8.
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/one" $det
expect 0 $mpirun -np 2 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/two" $det
grep_in out "batch 16 (2 ranks x 1 pass of 8, deterministic reduction)"
grep_in out "step 20 of 20"
same "$tmp/one" "$tmp/two" "two ranks differ from one process in the deterministic reduction"
[ "$(last "$tmp/one" loss)" = "$(last "$tmp/two" loss)" ] || fail "the logged loss differs: rank 0 must log the mean of all ranks"
# Another seed really differs (the comparison can fail).
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/seed" $det -o seed=8
cmp -s "$tmp/one/tiny/checkpoint.safetensors" "$tmp/seed/tiny/checkpoint.safetensors" &&
	fail "another seed made the same checkpoint"

# Mean: one allreduce; equal to one process up to float rounding.
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/mean1"
expect 0 $mpirun -np 2 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/mean2"
for key in loss grad_norm; do
	a=$(last "$tmp/mean1" $key)
	b=$(last "$tmp/mean2" $key)
	awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; s = a < 0 ? -a : a;
		exit !(a != "" && b != "" && d <= 1e-4 * (s + 1e-6)) }' ||
		fail "mean reduction: $key $b with two ranks, $a with one"
done
# Only rank 0 writes: one log, one line per log_every steps.
[ "$(wc -l <"$tmp/mean2/tiny/log.jsonl")" -eq 4 ] || fail "log.jsonl of two ranks has not 4 lines"

# Resume across a change of ranks: 10 steps on two, 10 on one.
expect 0 $mpirun -np 2 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/switch" $det --max-steps 10
grep_in out "step 10 of 20 (stopped early"
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/switch" $det
grep_in out "at step 10"
same "$tmp/one" "$tmp/switch" "10 steps on two ranks and 10 on one differ from 20 on one"

# Sampling: every rank samples its share of whole batches, rank 0 gathers
# and writes once; the samples equal one process's bit for bit, also when
# the 4 batches of 7 samples split unevenly over 3 ranks, or leave one of
# 5 ranks without work.
ckpt="$tmp/one/tiny/checkpoint.safetensors"
small="--checkpoint $ckpt --count 7 -o sample.batch=2"
expect 0 "$diffuse" sample $small --out "$tmp/s1.safetensors"
for n in 2 3 5; do
	expect 0 $mpirun -np $n "$diffuse" sample $small --out "$tmp/s$n.safetensors"
	[ "$(grep -c "samples from" "$tmp/out")" -eq 1 ] || { fail "$n ranks did not write once:"; sed 's/^/  /' "$tmp/out"; }
	grep_in out "batches shared by $n ranks"
	cmp -s "$tmp/s1.safetensors" "$tmp/s$n.safetensors" || fail "$n ranks sampled other values than one process"
done
expect 0 "$diffuse" sample $small --out "$tmp/seed.safetensors" -o seed=8
cmp -s "$tmp/s1.safetensors" "$tmp/seed.safetensors" && fail "another seed sampled the same values"
expect 0 $mpirun -np 2 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/grid.png"
[ -s "$tmp/grid.png" ] || fail "no grid from sampling under mpirun"

# Evaluation: the ranks share the sampling, rank 0 streams every image
# through the metrics in index order: the same figures as one process,
# exactly, and one summary. (28x28 images: the default features need them.)

# eval_run NAME COMMAND...: evaluates a copy of the checkpoint in $tmp/NAME;
# the summary, with that folder named DIR, goes to $tmp/NAME.json.
eval_run() {
	name=$1
	shift
	mkdir -p "$tmp/$name"
	cp "$tmp/e/tiny/checkpoint.safetensors" "$tmp/$name/"
	expect 0 "$@" eval "$tmp/tiny.cfg" -o dataset.size=28 -o sample.batch=3 --count 10 --json \
		--checkpoint "$tmp/$name/checkpoint.safetensors"
	sed "s|$tmp/$name|DIR|g" "$tmp/out" >"$tmp/$name.json"
}
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/e" -o dataset.size=28 -o train.steps=2
eval_run e1 "$diffuse"
eval_run e2 $mpirun -np 2 "$diffuse"
grep -q '"fd":' "$tmp/e1.json" || { fail "no fd in the summary:"; sed 's/^/  /' "$tmp/e1.json"; }
[ "$(wc -l <"$tmp/e2.json")" -eq 1 ] || fail "two ranks printed more than one summary"
cmp -s "$tmp/e1.json" "$tmp/e2.json" || { fail "two ranks evaluated other figures:"; cat "$tmp/e1.json" "$tmp/e2.json"; }
cmp -s "$tmp/e1/eval-samples.safetensors" "$tmp/e2/eval-samples.safetensors" || fail "eval: two ranks sampled other values"
# Failures end the job with status 1 and leave no rank waiting: rank 0
# alone failing to write, and every rank failing to load.
expect 1 $mpirun -np 2 "$diffuse" sample $small --out "$tmp/missing/s.safetensors"
grep_in err "rank 0 of 2 failed"
expect 1 $mpirun -np 2 "$diffuse" eval "$tmp/tiny.cfg" -o dataset.size=28 --count 10 \
	--checkpoint "$tmp/missing/checkpoint.safetensors"
grep_in err "cannot open"

# A global batch the ranks cannot share.
expect 1 $mpirun -np 2 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/odd" -o train.batch=15
grep_in err "train.batch = 15 does not divide across 2 ranks"
grep_in err "rank 0 of 2 failed"

# A killed rank: the job ends within the timeout, the message names the
# rank, and the last checkpoint loads.
$mpirun -np 2 sh -c 'echo $$ >"$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$@"' "$tmp" \
	"$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/kill" -o train.steps=1000000000 \
	-o train.checkpoint_every=50 >"$tmp/out" 2>"$tmp/err" &
job=$!
for _ in $(seq 1 100); do
	[ -s "$tmp/kill/tiny/checkpoint.safetensors" ] && [ -s "$tmp/pid.1" ] && break
	sleep 0.2
done
if [ -s "$tmp/pid.1" ]; then
	kill -KILL "$(cat "$tmp/pid.1")"
	waited=0
	while kill -0 "$job" 2>/dev/null && [ $waited -lt 60 ]; do
		sleep 0.5
		waited=$((waited + 1))
	done
	if kill -0 "$job" 2>/dev/null; then
		fail "the job still runs 30 s after rank 1 was killed"
		kill -KILL "$job"
	fi
	wait "$job"
	got=$?
	echo "killed rank 1: the job ended after $((waited / 2)) s, exit $got; it said:"
	grep -i "rank" "$tmp/err" | head -n 5 | sed 's/^/  /'
	[ "$got" -ne 0 ] || fail "the job exited 0 after rank 1 was killed"
	grep -q "rank 1" "$tmp/err" || { fail "the message does not name rank 1:"; sed 's/^/  /' "$tmp/err"; }
	expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/kill" -o train.steps=1000000000 --max-steps 1
	grep_in out "resuming"
else
	fail "rank 1 never started"
	kill -KILL "$job" 2>/dev/null
	wait "$job"
fi

[ "$failures" -eq 0 ] || exit 1
echo "mpi: all checks passed"
