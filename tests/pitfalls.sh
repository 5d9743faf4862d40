#!/bin/sh
# Pitfalls of other diffusion codes, through the diffuse program
# (doc/pitfalls.md names the guard of each): no -march=native in the build,
# threads default to physical cores and are reported, an unknown key in
# any section is an error, guidance reaches every latent channel, sample i
# does not depend on the sampling batch, a resume with the vae's posterior
# noise equals one run, the sample grids and checkpoints written during
# training leave the training untouched, and an evaluation records what
# made its samples.
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
export DIFFUSE_PLUGIN_PATH="$DF_TOP_BUILDDIR/tests/plugins/.libs/stage_fixture.so:$DIFFUSE_PLUGIN_PATH"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-pitfalls-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

# floats FILE NAME: the values of one float32 tensor of a safetensors file, one per line.
floats() {
	hlen=$(od -An -tu8 -N8 "$1" | tr -d ' ')
	offsets=$(dd if="$1" bs=1 skip=8 count="$hlen" 2>/dev/null | grep -o "\"$2\":{[^}]*}" |
		sed 's/.*data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2/')
	[ -n "$offsets" ] || { echo "no tensor $2 in $1" >&2; return 1; }
	set -- "$1" $offsets
	od -An -v -tf4 -j $((8 + hlen + $2)) -N $(($3 - $2)) "$1" | tr -s ' ' '\n' | grep -v '^$'
}

# same_floats WHAT FILE1 FILE2 NAME...: the tensors agree value for value.
same_floats() {
	what=$1 a=$2 b=$3
	shift 3
	for name in "$@"; do
		floats "$a" "$name" >"$tmp/fa" && floats "$b" "$name" >"$tmp/fb" && [ -s "$tmp/fa" ] &&
			cmp -s "$tmp/fa" "$tmp/fb" || fail "$what: $name differs"
	done
}

# ---- the build: a baseline, never -march=native (SIGILL on other machines).
for f in "$DF_TOP_BUILDDIR/Makefile" "$DF_TOP_SRCDIR/configure.ac" "$DF_TOP_SRCDIR/examples/plugin/Makefile" \
	"$DF_TOP_SRCDIR/Makefile.am" "$DF_TOP_SRCDIR"/*/*.am "$DF_TOP_SRCDIR"/*/*/*.am "$DF_TOP_SRCDIR"/*/*/*/*.am; do
	[ -f "$f" ] || continue
	if grep -nE -- '-m(arch|tune|cpu)=native' "$f" >"$tmp/native"; then
		fail "$f builds for the build machine's CPU only:"
		sed 's/^/  /' "$tmp/native"
	fi
done

# ---- threads: OpenMP is linked, the default is one thread per physical
# core of the CPUs this process may use, and the run says what it uses.
lib="$DF_TOP_BUILDDIR/sdk/.libs/libdiffuse.so"
if command -v objdump >/dev/null 2>&1 && [ -f "$lib" ]; then
	objdump -p "$lib" | grep -qE 'NEEDED.*(gomp|omp)' || fail "libdiffuse links no OpenMP runtime"
fi
cores=
allowed=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status 2>/dev/null)
if [ -n "$allowed" ] && [ -r /sys/devices/system/cpu/cpu0/topology/core_id ]; then
	cores=$(echo "$allowed" | tr ',' '\n' | while IFS=- read -r first last; do
		cpu=$first
		while [ "$cpu" -le "${last:-$first}" ]; do
			topo=/sys/devices/system/cpu/cpu$cpu/topology
			if [ -r "$topo/core_id" ] && [ -r "$topo/physical_package_id" ]; then
				echo "$(cat "$topo/physical_package_id") $(cat "$topo/core_id")"
			else
				echo unknown # the library then counts logical CPUs: no exact figure to expect
			fi
			cpu=$((cpu + 1))
		done
	done | sort -u | tee "$tmp/cores" | wc -l)
	grep -q unknown "$tmp/cores" && cores=
fi

cat >"$tmp/tiny.cfg" <<'CFG'
name = "tiny";
seed = 5;
threads = 1;
dataset = { plugin = "shapes"; size = 8; count = 20; };
backbone = { plugin = "pixel-mlp"; hidden = 8; };
objective = { plugin = "flow-fixture"; };
sampler = { plugin = "euler-fixture"; steps = 3; };
train = { batch = 4; lr = 1e-2; steps = 6; ema = 0.9; log_every = 1; checkpoint_every = 0; sample_every = 0; };
sample = { count = 5; batch = 5; cfg_scale = 2.0; };
CFG

expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/threads" -o threads=0 -o train.steps=1
if [ -n "$cores" ]; then
	grep_in out "cpu: $cores threads ($cores physical cores available)"
else
	grep_in out "physical cores available)"
fi
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/threads3" -o threads=3 -o train.steps=1
grep_in out "cpu: 3 threads"

# ---- every setting is honoured or an error: an unknown key in any
# component's section, in a stage's or at the top level, and an unknown
# section, are refused by check.
"$diffuse" plugins 2>/dev/null | awk 'NR > 1 && NF >= 4 && $1 ~ /^(dataset|encoder|backbone|objective|sampler|metric)$/ { print $1, $2 }' >"$tmp/components"
[ "$(wc -l <"$tmp/components")" -ge 10 ] || fail "diffuse plugins lists too few components"
while read -r kind name; do
	printf 'name = "u";\n%s = { plugin = "%s";\n  no_such_key = 1; };\n' "$kind" "$name" >"$tmp/unknown.cfg"
	expect 2 "$diffuse" check "$tmp/unknown.cfg"
	grep_in err "unknown.cfg:3: $kind.no_such_key: unknown setting of $kind \"$name\""
done <"$tmp/components"
for section in train sample; do
	printf 'name = "u";\n%s = { no_such_key = 1; };\n' "$section" >"$tmp/unknown.cfg"
	expect 2 "$diffuse" check "$tmp/unknown.cfg"
	grep_in err "$section.no_such_key: unknown setting"
done
printf 'name = "u";\nno_such_key = 1;\n' >"$tmp/unknown.cfg"
expect 2 "$diffuse" check "$tmp/unknown.cfg"
grep_in err "no_such_key: unknown setting"
printf 'name = "u";\nsamplr = { plugin = "euler"; };\n' >"$tmp/unknown.cfg"
expect 2 "$diffuse" check "$tmp/unknown.cfg"
grep_in err 'samplr: unknown section; did you mean "sampler"?'

# ---- guidance on all four latent channels by default; channels 0-2 only
# under the legacy setting. One Euler step: x0 = x1 - v, so each channel
# of the sample shows whether its velocity was guided.
cat >"$tmp/latent.cfg" <<'CFG'
name = "latent";
seed = 3;
threads = 1;
dataset = { plugin = "shapes"; size = 8; count = 12; channels = 3; };
encoder = { plugin = "vae"; ch = 4; ch_mult = [1, 2]; num_res_blocks = 1; z_channels = 4; groups = 2; };
backbone = { plugin = "pixel-mlp"; hidden = 8; };
objective = { plugin = "flow-fixture"; };
sampler = { plugin = "euler-fixture"; steps = 1; };
train = { batch = 4; steps = 2; log_every = 1; checkpoint_every = 0; sample_every = 0; class_dropout = 0.5; };
sample = { count = 3; batch = 3; cfg_scale = 4.0; };
CFG
expect 0 "$diffuse" train "$tmp/latent.cfg" --runs-dir "$tmp/runs"
ckpt="$tmp/runs/latent/checkpoint.safetensors"
expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/default.safetensors"
grep_in out "guidance 4 on all channels"
expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/all.safetensors" -o sample.guidance_channels=all
expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/first3.safetensors" -o sample.guidance_channels=first3
grep_in out "channels 0-2 (legacy)"
same_floats "the default guidance is not \"all\"" "$tmp/default.safetensors" "$tmp/all.safetensors" x0
# x0 is (3, 4, 4, 4): 16 values per channel; "differ" counts per channel.
floats "$tmp/all.safetensors" x0 >"$tmp/all.txt"
floats "$tmp/first3.safetensors" x0 >"$tmp/first3.txt"
paste "$tmp/all.txt" "$tmp/first3.txt" | awk '{ c = int((NR - 1) / 16) % 4; if ($1 != $2) differ[c]++ }
	END { print differ[0] + 0, differ[1] + 0, differ[2] + 0, differ[3] + 0 }' >"$tmp/differ"
read -r d0 d1 d2 d3 <"$tmp/differ"
echo "guided values differing per channel, all against first3: $d0 $d1 $d2 $d3; physical cores: ${cores:-unknown}"
[ "$d0$d1$d2" = 000 ] || fail "first3 changed the guidance of channels 0-2 (values differing per channel: $d0 $d1 $d2)"
[ "$d3" -gt 0 ] || fail "channel 3 is guided the same with \"all\" and \"first3\": it is never guided"

# ---- resume with noise drawn in the encoder (the vae's posterior sample):
# 2 + 2 steps equal 4, byte for byte.
sampled="-o encoder.posterior=sample -o train.steps=4"
# shellcheck disable=SC2086
expect 0 "$diffuse" train "$tmp/latent.cfg" --runs-dir "$tmp/vae-once" $sampled
# shellcheck disable=SC2086
expect 0 "$diffuse" train "$tmp/latent.cfg" --runs-dir "$tmp/vae-twice" $sampled --max-steps 2
# shellcheck disable=SC2086
expect 0 "$diffuse" train "$tmp/latent.cfg" --runs-dir "$tmp/vae-twice" $sampled
grep_in out "resuming"
cmp -s "$tmp/vae-once/latent/checkpoint.safetensors" "$tmp/vae-twice/latent/checkpoint.safetensors" ||
	fail "with encoder.posterior = sample, the resumed run differs from the uninterrupted one"

# ---- noise per sample: sample i is the same whatever the sampling batch,
# for the deterministic fixture and a stochastic SDE sampler.
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/plain"
ckpt="$tmp/plain/tiny/checkpoint.safetensors"
for sampler in "" "-o sampler.plugin=euler-maruyama -o sampler.steps=4"; do
	# shellcheck disable=SC2086
	expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/b5.safetensors" $sampler
	for batch in 1 2; do
		# shellcheck disable=SC2086
		expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/b$batch.safetensors" -o sample.batch=$batch $sampler
		same_floats "sample.batch=$batch $sampler against batch 5" "$tmp/b5.safetensors" "$tmp/b$batch.safetensors" x0
	done
done
expect 0 "$diffuse" sample --checkpoint "$ckpt" --out "$tmp/s9.safetensors" -o seed=9 -o sampler.plugin=euler-maruyama \
	-o sampler.steps=4
floats "$tmp/b1.safetensors" x0 >"$tmp/fa"
floats "$tmp/s9.safetensors" x0 >"$tmp/fb"
cmp -s "$tmp/fa" "$tmp/fb" && fail "another seed gave the same SDE samples (the comparison above cannot fail)"

# ---- the EMA and the sample grids: writing grids and checkpoints every
# 2 steps leaves weights, EMA and moments as a run that writes neither.
expect 0 "$diffuse" train "$tmp/tiny.cfg" --runs-dir "$tmp/busy" -o train.sample_every=2 -o train.checkpoint_every=2
[ -f "$tmp/busy/tiny/samples-000002.png" ] || fail "no grid at step 2"
grep_in out "from EMA weights"
for tensor in in.weight out.weight y_embedder.embedding_table; do
	same_floats "grids and checkpoints during training" "$ckpt" "$tmp/busy/tiny/checkpoint.safetensors" \
		"$tensor" "ema.$tensor" "opt.m.$tensor" "opt.v.$tensor"
done
# ... and the EMA set really is another set of weights, stepped.
floats "$ckpt" in.weight >"$tmp/fa"
floats "$ckpt" ema.in.weight >"$tmp/fb"
cmp -s "$tmp/fa" "$tmp/fb" && fail "the EMA set equals the raw weights after 6 steps at decay 0.9"

# ---- an evaluation says what made its samples: count, weights set and
# step, sampler, NFE, guidance and seed, on stdout and in the run's log
# (skipped without the Debian Fashion-MNIST files its metric needs).
if [ -r /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
	export DIFFUSE_DATA_DIR="$DF_TOP_SRCDIR/data"
	quick="$DF_TOP_SRCDIR/pipelines/quickstart.cfg"
	tiny="-o backbone.depth=1 -o backbone.hidden=32 -o backbone.heads=1 -o sampler.steps=2 -o sample.batch=10
 -o train.batch=8 -o train.steps=1 -o train.checkpoint_every=0 -o threads=1"
	# shellcheck disable=SC2086
	expect 0 "$diffuse" train "$quick" $tiny --runs-dir "$tmp/eval"
	# shellcheck disable=SC2086
	expect 0 "$diffuse" eval "$quick" $tiny -o seed=4 --checkpoint "$tmp/eval/quickstart/checkpoint.safetensors" \
		--count 10 --metrics class-acc --no-reference --json
	made_by="10 samples from EMA weights (step 1), sampler euler, NFE 2, guidance 2 on all channels for t in [0, 1], seed 4"
	grep_in out "\"made_by\":\"$made_by\""
	grep_in out '"count":10,"real":10'
	cp "$tmp/eval/quickstart/log.jsonl" "$tmp/log"
	grep_in log "$made_by"
fi

[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "pitfalls: all passed"
