#!/usr/bin/env bash
# Builds the virtual ARM board: a Debian kernel (arm64, or armmp for the 32-bit
# board) and an initramfs holding the device binary for that architecture with
# its glibc, the emoji bundle (models/emoji), the vivid camera modules, v4l2-ctl and the
# init script (tools/vboard/init).
# Debian packages are fetched with `apt-get download` into the cache folder
# (kept between runs when the machine keeps it; never required).
#
# Usage: tools/vboard/build.sh [--arch aarch64|armv7] [--bin PATH] [--deb PATH] [--out DIR]
#   --arch A    aarch64 (64-bit OS, default) or armv7 (32-bit OS, armhf)
#   --bin PATH  use this device binary instead of cross-building one
#   --deb PATH  also put this package (tools/cross/package.sh) on the board, with
#               the tools its maintainer scripts call (getent, groupadd,
#               useradd): the guest installs it and checks it first
#   --out DIR   where vmlinuz and initrd.cpio go (default target/vboard, or
#               target/vboard-armv7)
# Environment: CLIP_EDGE_VBOARD_CACHE (default ~/.cache/clip-edge/vboard, outside
# the checkout so that a machine that keeps its home keeps the packages across
# fresh clones).
set -euo pipefail
caller=$PWD
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# Paths on the command line are the caller's, relative to where it ran.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
bin=""
deb_file=""
out=""
arch=aarch64
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --bin) bin=$(absolute "$2"); shift 2 ;;
    --deb) deb_file=$(absolute "$2"); shift 2 ;;
    --out) out=$(absolute "$2"); shift 2 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cache=${CLIP_EDGE_VBOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clip-edge/vboard}
case "$arch" in
  aarch64) target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; deb=arm64; kmeta=linux-image-arm64
    ldso=ld-linux-aarch64.so.1; qemu=qemu-system-aarch64; setup=() ;;
  armv7) target=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; deb=armhf; kmeta=linux-image-armmp
    ldso=ld-linux-armhf.so.3; qemu=qemu-system-arm; setup=(--armhf) ;;
  *) echo "build.sh: --arch takes aarch64 or armv7, not '$arch'" >&2; exit 2 ;;
esac
[ -n "$out" ] || out="$root/target/vboard$([ "$arch" = aarch64 ] || echo "-$arch")"
t0=$(date +%s)

if ! command -v $qemu >/dev/null || ! command -v cpio >/dev/null \
  || ! command -v $gnu-readelf >/dev/null || ! dpkg --print-foreign-architectures | grep -qx $deb; then
  if [ "$(id -u)" != 0 ]; then
    echo "build.sh: needs $qemu, cpio, the $arch binutils and dpkg's $deb architecture; as root run tools/cross/setup-debian.sh ${setup[*]} and apt-get install qemu-system-arm cpio" >&2
    exit 1
  fi
  tools/cross/setup-debian.sh "${setup[@]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-arm cpio >/dev/null
fi

# The kernel package follows Debian's current ABI name (linux-image-6.1.0-N-arm64, -armmp).
kernel_package() {
  apt-cache depends $kmeta:$deb 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -1
}
kpkg=$(kernel_package)
if [ -z "$kpkg" ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  kpkg=$(kernel_package)
fi
[ -n "$kpkg" ] || { echo "build.sh: apt knows no $kmeta:$deb; run apt-get update" >&2; exit 1; }
pkgs=("$kpkg" busybox-static v4l-utils libv4l-0 libv4lconvert0 libv4l2rds0 libstdc++6 libgcc-s1 libudev1 libjpeg62-turbo)
if [ -n "$deb_file" ]; then
  [ -f "$deb_file" ] || { echo "build.sh: no package at $deb_file" >&2; exit 1; }
  pkg_arch=$(dpkg-deb -f "$deb_file" Architecture)
  [ "$pkg_arch" = "$deb" ] || { echo "build.sh: $deb_file is for $pkg_arch, this board is $deb" >&2; exit 1; }
  # What the package's postinst calls, as on Raspberry Pi OS: getent (libc-bin),
  # groupadd and useradd (passwd), with their libraries.
  pkgs+=(libc-bin passwd libaudit1 libselinux1 libsemanage2 libsepol2
    libbz2-1.0 libcap-ng0 libpcre2-8-0)
fi
mkdir -p "$cache/debs"
missing=()
for p in "${pkgs[@]}"; do
  ls "$cache/debs/${p}_"*_$deb.deb >/dev/null 2>&1 || missing+=("$p:$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fetching ${missing[*]}"
  (cd "$cache/debs" && apt-get download -q "${missing[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
fi
for p in "${pkgs[@]}"; do
  ls "$cache/debs/${p}_"*_$deb.deb >/dev/null 2>&1 || { echo "build.sh: could not fetch $p:$deb" >&2; exit 1; }
done

if [ -z "$bin" ]; then
  # Without the calling test's CARGO_* variables: they would make cargo rebuild it.
  source "$root/tools/cross/clean-cargo-env.sh"
  export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="$root/target/cross-release" "CC_${target//-/_}=$gnu-gcc"
  unset "CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  cargo build --locked --release --target $target -p clip-edge-board --bin clip-edge-board 2>&1 | tail -1
  bin="$CARGO_TARGET_DIR/$target/release/clip-edge-board"
fi
[ -x "$bin" ] || { echo "build.sh: no device binary at $bin" >&2; exit 1; }

# Unpacked under target/, not /tmp: /tmp may be a small tmpfs.
mkdir -p "$root/target"
debs=$(mktemp -d "$root/target/vboard-debs.XXXXXX")
trap 'rm -rf "$debs"' EXIT
newest_deb() {
  # Older versions may linger in a kept cache.
  ls "$cache/debs/${1}_"*_$deb.deb | sort -V | tail -n 1
}
for p in "${pkgs[@]:1}"; do
  dpkg-deb -x "$(newest_deb "$p")" "$debs"
done
# The kernel package unpacks to ~360 MB, nearly all of it modules the board
# never loads: take the kernel image, the media drivers and the power-cut disk's
# (virtio, block, ext4 and what it needs), and any other module vivid comes to
# depend on one file at a time (add_module below).
kdeb=$(newest_deb "$kpkg")
kver=${kpkg#linux-image-}
k="./lib/modules/$kver/kernel"
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$debs" --wildcards "./boot/vmlinuz-$kver" "$k/drivers/media/*" \
  "$k/drivers/virtio/*" "$k/drivers/block/*" "$k/fs/ext4/*" "$k/fs/jbd2/*" "$k/fs/mbcache.ko" "$k/lib/*" "$k/crypto/*" \
  "$k/drivers/net/virtio_net.ko" "$k/drivers/net/net_failover.ko" "$k/net/core/failover.ko"
[ -f "$debs/boot/vmlinuz-$kver" ] || { echo "build.sh: $kdeb has no boot/vmlinuz-$kver" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
fs="$out/root"
mkdir -p "$fs"/{bin,sbin,lib,dev,proc,sys,run,tmp,etc/clip-edge,opt/clip-edge/bin,opt/clip-edge/models/emoji,usr/bin,lib/modules/media}
cp "$debs/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$debs/bin/busybox" "$fs/bin/busybox"
ln -s busybox "$fs/bin/sh"
cp tools/vboard/init "$fs/init"
chmod 755 "$fs/init"
cp tools/vboard/board.toml "$fs/etc/clip-edge/board.toml"
cp "$bin" "$fs/opt/clip-edge/bin/clip-edge-board"
cp "$debs/usr/bin/v4l2-ctl" "$fs/usr/bin/v4l2-ctl"
# The device needs the manifest, the image encoders (and their NNEF copies)
# and the prompt store; the text encoder stays on the host.
for f in bundle.toml prompts.store models/emoji/image_encoder_*; do
  cp "models/emoji/${f#models/emoji/}" "$fs/opt/clip-edge/models/emoji/"
done

# Shared libraries: the cross glibc for the daemon, the packages' for v4l2-ctl.
libdirs=(/usr/$gnu/lib "$debs/lib/$gnu" "$debs/usr/lib/$gnu")
find_lib() {
  for d in "${libdirs[@]}"; do
    if [ -e "$d/$1" ]; then echo "$d/$1"; return 0; fi
  done
  return 1
}
copy_needed() {
  local lib path
  for lib in $($gnu-readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    [ -e "$fs/lib/$lib" ] && continue
    path=$(find_lib "$lib") || { echo "build.sh: $1 needs $lib, not found in ${libdirs[*]}" >&2; exit 1; }
    cp -L "$path" "$fs/lib/$lib"
    copy_needed "$fs/lib/$lib"
  done
}
copy_needed "$fs/opt/clip-edge/bin/clip-edge-board"
copy_needed "$fs/usr/bin/v4l2-ctl"
if [ -n "$deb_file" ]; then
  mkdir -p "$fs/pkg" "$fs/usr/sbin"
  # A fixed name: init installs /pkg/clip-edge_*.deb.
  cp "$deb_file" "$fs/pkg/clip-edge_$(dpkg-deb -f "$deb_file" Version)_$deb.deb"
  cp "$debs/usr/bin/getent" "$fs/usr/bin/getent"
  for t in groupadd useradd; do cp "$debs/usr/sbin/$t" "$fs/usr/sbin/$t"; done
  for t in usr/bin/getent usr/sbin/groupadd usr/sbin/useradd; do copy_needed "$fs/$t"; done
fi
cp -L "$(find_lib $ldso)" "$fs/lib/$ldso"

# vivid and the modules it depends on, in load order (from each module's
# .modinfo `depends=`; Debian's package has no modules.dep).
moddir="$debs/lib/modules/$kver"
order=()
add_module() {
  local name=$1 dep file
  for m in "${order[@]}"; do [ "$m" = "$name" ] && return 0; done
  file=$(find "$moddir/kernel" -name "$name.ko" 2>/dev/null | head -1 || true)
  if [ -z "$file" ]; then
    file=$(dpkg-deb --fsys-tarfile "$kdeb" | tar -t | grep -m1 "^\./lib/modules/$kver/kernel/.*/$name\.ko$" || true)
    [ -n "$file" ] || { echo "build.sh: module $name not in $kdeb" >&2; exit 1; }
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$debs" "$file"
    file="$debs/${file#./}"
  fi
  for dep in $(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$dep"
  done
  cp "$file" "$fs/lib/modules/media/"
  order+=("$name")
}
add_module vivid
# The power-cut campaign's disk (tools/python/clip_edge_tools/powercut.py): virtio-blk with ext4, whose
# crc32c the kernel asks for by name (no modprobe here, so it is loaded up front).
for m in virtio_mmio virtio_blk crc32c_generic ext4; do add_module $m; done
printf '%s\n' "${order[@]}" >"$fs/lib/modules/media/order"
# virtio-net, loaded only by the campaign's store pushes over MQTT (QEMU's user network).
loaded=${#order[@]}
add_module virtio_net
printf '%s\n' "${order[@]:$loaded}" >"$fs/lib/modules/media/net-order"

(cd "$fs" && find . | LC_ALL=C sort | cpio -o -H newc --quiet >"$out/initrd.cpio")
rm -rf "$fs"
echo "$arch board, kernel $kver: $out/vmlinuz ($(stat -c %s "$out/vmlinuz") bytes)"
echo "initramfs: $out/initrd.cpio ($(stat -c %s "$out/initrd.cpio") bytes; modules: ${order[*]})"
echo "device binary: $bin ($(stat -c %s "$bin") bytes)"
[ -z "$deb_file" ] || echo "package to install on the board: $deb_file"
echo "vboard build: $(( $(date +%s) - t0 )) s"
