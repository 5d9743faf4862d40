# Helpers for the shell tests (cli.sh, train_stages.sh, eval_cli.sh), sourced after setting $tmp and failures=0.
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
