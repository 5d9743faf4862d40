# Helpers for the shell tests (cli.sh, train_stages.sh, eval_cli.sh, summary_cli.sh), sourced after setting $tmp and failures=0.
# expect STATUS COMMAND...: runs it, keeps stdout/stderr in $tmp/out, $tmp/err.
expect() {
	want=$1
	shift
	"$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	if [ "$got" != "$want" ]; then
		echo "FAIL: exit $got, expected $want: $*"
		sed 's/^/  stdout: /' "$tmp/out"
		sed 's/^/  stderr: /' "$tmp/err"
		failures=$((failures + 1))
	fi
}

# grep_in FILE TEXT: TEXT (fixed string) must be in $tmp/FILE.
grep_in() {
	if ! grep -qF -- "$2" "$tmp/$1"; then
		echo "FAIL: \"$2\" not in $1 of the last command:"
		sed 's/^/  /' "$tmp/$1"
		failures=$((failures + 1))
	fi
}

# expect_interrupted WHERE TEXT COMMAND...: runs COMMAND in the background
# (stdout/stderr in $tmp/out, $tmp/err), sends Ctrl-C (SIGINT) once TEXT
# is in $tmp/WHERE (it has started), and expects exit status 3.
expect_interrupted() {
	where=$1 text=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err" &
	pid=$!
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		grep -q "$text" "$tmp/$where" 2>/dev/null && break
		sleep 0.5
	done
	sleep 0.5
	kill -INT "$pid"
	wait "$pid"
	got=$?
	if [ "$got" -ne 3 ]; then
		echo "FAIL: exit $got after SIGINT, expected 3: $*"
		sed 's/^/  stderr: /' "$tmp/err"
		failures=$((failures + 1))
	fi
}

# json_has KEY[=JSON]...: the last command's stdout is one JSON object with
# these keys and values (tests/json_check: dotted paths, compact JSON).
json_has() {
	if ! "$DF_TOP_BUILDDIR/tests/json_check" "$tmp/out" "$@"; then
		sed 's/^/  stdout: /' "$tmp/out"
		failures=$((failures + 1))
	fi
}
