#!/bin/sh
# bench/objective-effect end to end at a test's size: a tiny SiT trained
# 1 and 2 steps with the plain velocity target and with knn (searching
# 512 items), each evaluated on 20 images; the table, the knn search
# timer, the Markdown form and the exit codes. Skips (77) without the
# Debian Fashion-MNIST files.
set -u
test -r /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz || exit 77
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-effect-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
export DIFFUSE="$DF_TOP_BUILDDIR/host/diffuse" DIFFUSE_DATA_DIR="$DF_TOP_SRCDIR/data"
bench="$DF_TOP_SRCDIR/bench/objective-effect"
base="$DF_TOP_SRCDIR/pipelines/sit-linear-velocity.cfg"
variant="$DF_TOP_SRCDIR/pipelines/sit-knn-fmnist.cfg"
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

tiny="-O backbone.depth=1 -O backbone.hidden=32 -O backbone.heads=1 -O sampler.steps=2 -O train.batch=8
 -O sample.batch=10 --count 20 --runs-dir $tmp/runs"

# Usage errors: 2, before anything runs.
expect 2 "$bench" --steps 2,1 "$base" "$variant"
grep_in err "must increase"
expect 2 "$bench" "$base"
grep_in err "the variant is the base"
expect 2 "$bench" --count x "$base" "$variant"
expect 2 "$bench" "$tmp/missing.cfg"

# shellcheck disable=SC2086 # tiny is a list of words
expect 0 "$bench" --steps 1,2 $tiny -o objective.limit=512 "$base" "$variant"
grep_in out "variant: $variant -o objective.limit=512"
for column in step FD_base FD_var acc_base own_var cpu_var; do
	grep_in out "$column"
done
# One row per step count, the FD of both runs a number, the knn search
# timed in the variant and nothing timed by the plain objective.
for step in 1 2; do
	awk -v s="$step" '$1 == s && $2 + 0 > 0 && $3 + 0 > 0 && $14 == "-" && $15 + 0 > 0 { found = 1 }
		END { exit !found }' "$tmp/out" ||
		{ echo "FAIL: no complete row for step $step"; sed 's/^/  /' "$tmp/out"; failures=$((failures + 1)); }
done
grep -q '"search":' "$tmp/runs/effect-variant/log.jsonl" ||
	{ echo "FAIL: knn logged no search time"; failures=$((failures + 1)); }
grep_in out "FD floor"

# Markdown, and a base-only override.
# shellcheck disable=SC2086
expect 0 "$bench" --steps 1 --markdown $tiny -b train.lr=1e-3 "$base"
grep_in out "| step | FD base | FD var |"
grep_in out "base:    $base -o train.lr=1e-3"

# A command that fails (a setting out of range): 1, naming the run.
# shellcheck disable=SC2086
expect 1 "$bench" --steps 1 $tiny -o objective.neighbours=0 "$base" "$variant"
grep_in err "variant: diffuse train failed"

echo "$failures failure(s)"
test "$failures" -eq 0
