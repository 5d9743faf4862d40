#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) straight from the
# sources and runs each for SECONDS (default 60) on its seed corpus.
# Exits non-zero if a target fails to build or reports a crash, a leak or
# undefined behaviour; the reproducer is left in the work directory.
#
#   fuzz/run.sh [SECONDS]
#
# Environment: CC (default clang-14, else clang), FUZZ_WORK (default: a
# fresh directory under ${TMPDIR:-/tmp}), FUZZ_JOBS (default 1).
set -eu

seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cc=${CC:-$(command -v clang-14 || command -v clang)}
work=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/diffuse-fuzz.XXXXXX")}
mkdir -p "$work"

# libdiffuse needs config.h only for PACKAGE_VERSION and the like.
printf '#define PACKAGE_VERSION "fuzz"\n' > "$work/config.h"

# FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION makes the PNG reader ignore
# checksums, so mutations reach the decoder instead of failing the CRC.
cflags="-g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	-I$work -I$top/sdk/include $(pkg-config --cflags jansson libpng)"
libs="$(pkg-config --libs jansson libpng) -lm"
io_sources="$top/sdk/src/io/common.c $top/sdk/src/io/safetensors.c $top/sdk/src/io/png.c"

# The fashion-mnist dataset's IDX parser and resampler.
idx_sources="$top/plugins/dataset/fashion-mnist/idx.c $top/plugins/dataset/resample.c $top/sdk/src/error.c"

status=0
for target in safetensors png idx; do
	case $target in
	idx) sources=$idx_sources extra_libs=-lz ;;
	*) sources=$io_sources extra_libs= ;;
	esac
	echo "== fuzz_$target: building"
	# shellcheck disable=SC2086
	"$cc" $cflags -o "$work/fuzz_$target" "$here/fuzz_$target.c" $sources $libs $extra_libs
	corpus="$work/corpus_$target"
	mkdir -p "$corpus"
	echo "== fuzz_$target: running for ${seconds}s (corpus $corpus)"
	if ! (cd "$work" && "./fuzz_$target" -max_total_time="$seconds" -max_len=65536 \
		-rss_limit_mb=4096 -print_final_stats=1 -jobs="${FUZZ_JOBS:-1}" \
		"$corpus" "$here/corpus/$target") > "$work/fuzz_$target.log" 2>&1; then
		echo "== fuzz_$target: FAILED, see $work/fuzz_$target.log"
		grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$work/fuzz_$target.log" | head -20 || true
		status=1
	else
		grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/fuzz_$target.log" | tail -2 || true
		echo "== fuzz_$target: ok"
	fi
done
exit $status
