#!/bin/sh
# Download Debian's `fortunes` package (bookworm: 1:1.99.1-7.3, "Data files containing fortune cookies") and unpack
# it into a scratch directory. train.py reads DIR/usr/share/games/fortunes/. Nothing here is committed.
#
# usage: examples/fortunes/get_data.sh DIR
set -eu

dir=${1:?usage: get_data.sh DIR}
expected_version='1:1.99.1-7.3'
expected_sha256='41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5'

mkdir -p "$dir"
cd "$dir"
rm -f fortunes_*.deb
# `apt-get download` fetches the candidate version; ask for the pinned one so the data cannot drift.
apt-get download "fortunes=$expected_version"
deb=$(ls fortunes_*.deb)
dpkg-deb -x "$deb" .
sha=$(sha256sum "$deb" | cut -d' ' -f1)
echo "sha256 $sha  $deb"
if [ "$sha" != "$expected_sha256" ]; then
    echo "warning: sha256 differs from the one the committed files were made from ($expected_sha256)" >&2
fi
ls usr/share/games/fortunes/ >/dev/null
