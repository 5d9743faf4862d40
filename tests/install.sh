#!/bin/sh
# Installs this build into a temporary root (make install DESTDIR=...),
# builds examples/plugin against it with nothing but pkg-config, and runs
# the installed diffuse with the plugin on DIFFUSE_PLUGIN_PATH. Then builds
# the same plugin claiming ABI major 2: it must be refused with one line
# while the other plugins still load.
set -u
tmp=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-install-XXXXXX") || exit 99
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
failures=0
fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}

root="$tmp/root"
${MAKE:-make} -C "$DF_TOP_BUILDDIR" install DESTDIR="$root" >"$tmp/install.log" 2>&1 || {
	cat "$tmp/install.log"
	echo "FAIL: make install DESTDIR=$root"
	exit 1
}
diffuse="$root$DF_BINDIR/diffuse"
for f in "$diffuse" "$root$DF_LIBDIR/pkgconfig/diffuse.pc" "$root$DF_INCLUDEDIR/diffuse/plugin.h" \
	"$root$DF_INCLUDEDIR/diffuse/runtime.h" "$root$DF_PLUGINDIR/shapes.so" "$root$DF_MANDIR/man1/diffuse.1"; do
	test -e "$f" || fail "not installed: $f"
done
ls "$root$DF_LIBDIR"/libdiffuse.so.* >/dev/null 2>&1 || fail "no versioned libdiffuse.so.N in $root$DF_LIBDIR"

# The installed SDK seen through pkg-config only; the sysroot maps the
# .pc's paths into the temporary root.
export PKG_CONFIG_PATH="$root$DF_LIBDIR/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
pluginsdir=$(pkg-config --variable=pluginsdir diffuse)
test "$pluginsdir" = "$root$DF_PLUGINDIR" || fail "pluginsdir in diffuse.pc is $pluginsdir, not $root$DF_PLUGINDIR"
mkdir "$tmp/good" "$tmp/abi2"
cp "$DF_TOP_SRCDIR/examples/plugin/Makefile" "$DF_TOP_SRCDIR/examples/plugin/stripes.c" "$tmp/good/"
cp "$DF_TOP_SRCDIR/examples/plugin/Makefile" "$DF_TOP_SRCDIR/examples/plugin/stripes.c" "$tmp/abi2/"
chmod -R u+w "$tmp/good" "$tmp/abi2"
# The example is built as a user would, outside the sanitizer flags of this build.
(cd "$tmp/good" && env -u CFLAGS -u LDFLAGS make >"$tmp/good.log" 2>&1) || { cat "$tmp/good.log"; fail "building examples/plugin"; }
(cd "$tmp/abi2" && env -u LDFLAGS make CFLAGS=-DDF_PLUGIN_TEST_ABI_MAJOR=2 >"$tmp/abi2.log" 2>&1) ||
	{ cat "$tmp/abi2.log"; fail "building examples/plugin with ABI major 2"; }

run_installed() {
	env LD_LIBRARY_PATH="$root$DF_LIBDIR" DIFFUSE_PLUGIN_SYSTEM_PATH="$root$DF_PLUGINDIR" "$@"
}

cat >"$tmp/stripes.cfg" <<'CFG'
name = "stripes";
dataset = { plugin = "stripes"; size = 16; max_period = 8.0; };
CFG

run_installed DIFFUSE_PLUGIN_PATH="$tmp/good" "$diffuse" plugins >"$tmp/out" 2>"$tmp/err" || fail "diffuse plugins"
grep -q "^dataset  *stripes  *1.0  *$tmp/good/stripes.so" "$tmp/out" || { cat "$tmp/out"; fail "stripes not listed"; }
grep -q "shapes" "$tmp/out" || fail "the installed shapes plugin is not listed"
test ! -s "$tmp/err" || { cat "$tmp/err"; fail "unexpected refusals"; }
run_installed DIFFUSE_PLUGIN_PATH="$tmp/good" "$diffuse" help stripes >"$tmp/out" 2>&1 || fail "diffuse help stripes"
grep -q "max_period  *float  *12" "$tmp/out" || { cat "$tmp/out"; fail "help stripes has no settings table"; }
run_installed DIFFUSE_PLUGIN_PATH="$tmp/good" "$diffuse" check "$tmp/stripes.cfg" >"$tmp/out" 2>&1 ||
	{ cat "$tmp/out"; fail "diffuse check with the example plugin"; }

# Another ABI major: one line naming file and reason; the others still load.
run_installed DIFFUSE_PLUGIN_PATH="$tmp/abi2" "$diffuse" plugins >"$tmp/out" 2>"$tmp/err" || fail "diffuse plugins (abi2)"
test "$(wc -l <"$tmp/err")" -eq 1 || { cat "$tmp/err"; fail "expected exactly one refusal line"; }
grep -qxF "$tmp/abi2/stripes.so: plugin ABI 2.0, host ABI 1.0: rebuild the plugin against this diffuse" "$tmp/err" ||
	{ cat "$tmp/err"; fail "wrong refusal line"; }
grep -q "shapes" "$tmp/out" || fail "shapes no longer loads next to a refused plugin"
grep -q "stripes" "$tmp/out" && fail "the refused plugin is listed"
run_installed DIFFUSE_PLUGIN_PATH="$tmp/abi2" "$diffuse" check "$tmp/stripes.cfg" >"$tmp/out" 2>"$tmp/err"
test $? -eq 2 || fail "check of a pipeline naming a refused plugin should exit 2"
grep -qF "$tmp/stripes.cfg:2: dataset.plugin: no dataset named \"stripes\": $tmp/abi2/stripes.so: plugin ABI 2.0" "$tmp/err" ||
	{ cat "$tmp/err"; fail "check does not say why stripes is missing"; }

if [ "$failures" -ne 0 ]; then
	echo "$failures failure(s)"
	exit 1
fi
echo "install, out-of-tree plugin and ABI refusal checks passed"
