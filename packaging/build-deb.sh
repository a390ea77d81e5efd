#!/usr/bin/env bash
# Builds dist/peerjs_<version>_<arch>.deb from this tree with dpkg-buildpackage (release build,
# Swift runtime linked statically), then runs lintian, which must report no error and no
# warning. packaging/debian/ and the units in packaging/systemd/ are copied to debian/ first.
# Needs packaging/setup.sh and the Swift toolchain (SWIFT_BIN, default /opt/swift/usr/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/dist
for tool in dpkg-buildpackage dh lintian; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool missing; run packaging/setup.sh" >&2; exit 1; }
done

rm -rf debian
cp -a packaging/debian debian
cp packaging/systemd/peerjs.service packaging/systemd/peerjs.socket packaging/systemd/peerjs-metrics.socket debian/
trap 'rm -rf "$root/debian"' EXIT

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
mkdir -p "$out"
rm -f "$out"/peerjs_* "$out"/peerjs-dbgsym_*
start=$(date +%s)
DEB_DESTDIR="$out" dpkg-buildpackage -us -uc -b -d \
  --buildinfo-option=-u"$out" --buildinfo-file="$out/peerjs_${version}_${arch}.buildinfo" \
  --changes-option=-u"$out" --changes-file="$out/peerjs_${version}_${arch}.changes"
echo "build-deb: dpkg-buildpackage took $(( $(date +%s) - start )) s"

deb=$out/peerjs_${version}_${arch}.deb
[ -f "$deb" ] || { echo "build-deb: $deb was not made" >&2; exit 1; }
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb"
# Error and warning tags fail; informational ones are shown (lintian -I) but do not.
lintian_out=$(lintian -I --fail-on error,warning "$deb" 2>&1) && lintian_status=0 || lintian_status=$?
echo "$lintian_out"
if [ "$lintian_status" -ne 0 ]; then
  echo "build-deb: lintian reports errors or warnings (status $lintian_status)" >&2
  exit 1
fi
echo "build-deb: lintian: no errors, no warnings"
echo "$deb"
