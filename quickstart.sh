#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs the main job:
#   installs the Debian packages diffuse needs (apt-get, when missing),
#   builds and installs diffuse into ./_install, and runs the quickstart
#   pipeline: a small class-conditional DiT trained on Fashion-MNIST, whose
#   sample grid (one row per class) lands in runs/quickstart/samples.png.
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
"$prefix/bin/diffuse" check "$pipeline"
"$prefix/bin/diffuse" run "$pipeline"
echo "quickstart: done; the sample grid is runs/quickstart/samples.png (one row per class)"
