#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs the main job:
#   installs the Debian packages diffuse needs (apt-get, when missing),
#   builds and installs diffuse into ./_install, and runs the quickstart
#   pipeline there (pipelines/quickstart.cfg once it exists; until the
#   DiT/SiT training stage arrives, the shapes pipeline, which is checked
#   and resolved into runs/).
set -euo pipefail
cd "$(dirname "$0")"

packages=(autoconf automake libtool pkg-config gcc make libconfig-dev libpng-dev zlib1g-dev
	libjansson-dev libopenblas-dev liblapack-dev libcmocka-dev dataset-fashion-mnist)
missing=()
for package in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
	sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "quickstart: installing ${missing[*]}"
	$sudo apt-get update
	$sudo apt-get install -y "${missing[@]}"
fi

prefix="$PWD/_install"
[ -x configure ] || autoreconf -fi
if ! [ -f config.status ] || ! ./config.status --config | grep -qF -- "--prefix=$prefix"; then
	./configure --prefix="$prefix"
fi
make -j"$(nproc)" install

pipeline=pipelines/quickstart.cfg
[ -f "$pipeline" ] || pipeline=pipelines/shapes.cfg
"$prefix/bin/diffuse" check "$pipeline"
"$prefix/bin/diffuse" run "$pipeline"
echo "quickstart: done; the run folder is runs/ (diffuse plugins lists what this install can do)"
