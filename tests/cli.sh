#!/bin/sh
# The diffuse program: commands, messages on stderr, exit codes
# (0 success, 1 failure while running, 2 usage or pipeline error).
set -u
diffuse="$DF_TOP_BUILDDIR/host/diffuse"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-cli-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

expect 0 "$diffuse" --version
grep_in out "diffuse "
grep_in out "(plugin ABI 1.0)"
expect 0 "$diffuse" --help
grep_in out "usage: diffuse COMMAND"
expect 2 "$diffuse"
expect 2 "$diffuse" chek
grep_in err 'unknown command "chek"; did you mean "check"?'
expect 0 "$diffuse" check --help
grep_in out "usage: diffuse check PIPELINE"
expect 0 "$diffuse" run --help
grep_in out "--runs-dir"

# Run from the build tree with no plugin variables, diffuse finds the
# build's plugins, not an installed copy's.
expect 0 env -u DIFFUSE_PLUGIN_SYSTEM_PATH -u DIFFUSE_PLUGIN_PATH "$diffuse" plugins
grep_in out "$DF_TOP_BUILDDIR/plugins/dataset/shapes/.libs/shapes.so"

# plugins: the build's plugins plus the good fixture; the bad ones refused.
export DIFFUSE_PLUGIN_PATH="$DIFFUSE_PLUGIN_PATH:$DF_FIXTURE_DIR"
expect 0 "$diffuse" plugins
grep_in out "KIND"
grep_in out "shapes"
grep_in out "test-sampler"
grep_in err "abi_major.so: plugin ABI 2.0, host ABI 1.0"
grep_in err "noentry.so: no df_plugin_entry symbol"
expect 2 "$diffuse" plugins extra

# help: a component's settings table, a pipeline section's, unknown names.
expect 0 "$diffuse" help test-sampler
grep_in out 'sampler "test-sampler"'
grep_in out "RANGE / CHOICES"
grep_in out "euler | heun"
grep_in out "[1, 1000]"
expect 0 "$diffuse" help train
grep_in out "batch"
expect 0 "$diffuse" help pipeline
grep_in out "@include"
expect 0 "$diffuse" help run
expect 2 "$diffuse" help test-smapler
grep_in err 'did you mean "test-sampler"?'

# check and run.
cat >"$tmp/good.cfg" <<'CFG'
name = "cli";
dataset = { plugin = "shapes"; size = 16; };
sampler = { plugin = "test-sampler"; steps = 10; };
CFG
cat >"$tmp/misspelt.cfg" <<'CFG'
dataset = { plugin = "shapes";
  szie = 16; };
CFG
cat >"$tmp/type.cfg" <<'CFG'
dataset = { plugin = "shapes"; size = "big"; };
CFG
cat >"$tmp/range.cfg" <<'CFG'
name = "r";

dataset = { plugin = "shapes"; size = 4; };
CFG
expect 0 "$diffuse" check "$tmp/good.cfg"
grep_in out "ok"
expect 2 "$diffuse" check "$tmp/misspelt.cfg"
grep_in err "$tmp/misspelt.cfg:2: dataset.szie: unknown setting of dataset \"shapes\"; did you mean \"size\"?"
expect 2 "$diffuse" check "$tmp/type.cfg"
grep_in err "$tmp/type.cfg:1: dataset.size: expected an int, got a string"
expect 2 "$diffuse" check "$tmp/range.cfg"
grep_in err "$tmp/range.cfg:3: dataset.size: 4 is out of range [8, 256]"
expect 0 "$diffuse" check "$tmp/range.cfg" -o dataset.size=8
expect 2 "$diffuse" check "$tmp/good.cfg" -o dataset.size=1000
grep_in err "<command line>: dataset.size: 1000 is out of range [8, 256]"
expect 2 "$diffuse" check "$tmp/good.cfg" -o
expect 2 "$diffuse" check "$tmp/nothing.cfg"
grep_in err "nothing.cfg: cannot read"
expect 2 "$diffuse" check
expect 2 "$diffuse" check "$tmp/good.cfg" --bogus

expect 0 "$diffuse" run "$tmp/good.cfg" --runs-dir "$tmp/runs" -o seed=4
grep_in out "nothing to run"
test -f "$tmp/runs/cli/pipeline.cfg" || { echo "FAIL: no runs/cli/pipeline.cfg"; failures=$((failures + 1)); }
cp "$tmp/runs/cli/pipeline.cfg" "$tmp/out"
grep_in out "seed = 4;"
grep_in out "count = 10000;"
grep_in out "method = \"euler\";"
# The resolved file is itself a valid pipeline.
expect 0 "$diffuse" check "$tmp/runs/cli/pipeline.cfg"
# A run folder that cannot be made is a failure while running.
touch "$tmp/file"
expect 1 "$diffuse" run "$tmp/good.cfg" --runs-dir "$tmp/file/runs"
grep_in err "not a directory"
expect 2 "$diffuse" run "$tmp/misspelt.cfg" --runs-dir "$tmp/runs2"
test ! -e "$tmp/runs2" || { echo "FAIL: a bad pipeline made a run folder"; failures=$((failures + 1)); }

# Every shipped pipeline is valid with the plugins of this build.
for pipeline in "$DF_TOP_SRCDIR"/pipelines/*.cfg; do
	expect 0 "$diffuse" check "$pipeline"
done

if [ "$failures" -ne 0 ]; then
	echo "$failures failure(s)"
	exit 1
fi
echo "all CLI checks passed"
