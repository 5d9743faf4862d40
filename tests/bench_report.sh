#!/bin/sh
# bench/report's parts that need neither PyTorch nor minutes: the plot
# program (a PNG from two series, the ranges it chose, its errors) and the
# driver's argument checks (skipped without python3).
set -u
plot="$DF_TOP_BUILDDIR/bench/report-plot"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-report-XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
failures=0

# shellcheck source=tests/expect.sh
. "$DF_TOP_SRCDIR/tests/expect.sh"

cat >"$tmp/series.json" <<'JSON'
{"series": [{"rgb": [0, 90, 230], "x": [30, 64, 97], "y": [120.5, 80.2, 61.0]},
            {"rgb": [230, 120, 0], "x": [36, 70, 104], "y": [118.0, 79.9, 60.1]}]}
JSON
expect 0 "$plot" "$tmp/series.json" "$tmp/fd.png"
grep_in out "x from 0 to 120, a tick every 20; y from 0 to 140, a gridline every 20"
# A PNG: the signature, then the IHDR of a 720 x 440 image.
sig=$(od -An -tx1 -N24 "$tmp/fd.png" | tr -d ' \n')
[ "$sig" = "89504e470d0a1a0a0000000d49484452000002d0000001b8" ] ||
	{ echo "FAIL: not a 720x440 PNG: $sig"; failures=$((failures + 1)); }

echo '{"series": [{"rgb": [0, 0, 0], "x": [1, 2], "y": [1]}]}' >"$tmp/bad.json"
expect 1 "$plot" "$tmp/bad.json" "$tmp/bad.png"
grep_in err "series 0 needs x and y of one length"
expect 1 "$plot" "$tmp/none.json" "$tmp/bad.png"
expect 2 "$plot" "$tmp/series.json"

if command -v python3 >/dev/null 2>&1; then
	expect 0 python3 "$DF_TOP_SRCDIR/bench/report" --help
	grep_in out "--steps"
	grep_in out "--count"
	expect 2 python3 "$DF_TOP_SRCDIR/bench/report" --points 0
	expect 2 python3 "$DF_TOP_SRCDIR/bench/report" --bogus
fi

echo "$failures failure(s)"
test "$failures" -eq 0
