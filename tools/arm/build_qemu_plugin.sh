#!/usr/bin/env bash
# Builds QEMU TCG plugins for counting the aarch64 instructions a program
# retires under qemu-user, against the plugin header of the installed qemu.
#
# Debian's qemu 7.2 accepts -plugin but ships no plugin libraries, and the
# static qemu-aarch64-static cannot load them at all, so this:
#   1. adds a deb-src entry for bookworm (+ security) when none exists,
#   2. installs the dynamic qemu-user (same version as qemu-user-static when
#      available), libglib2.0-dev and pkg-config,
#   3. fetches qemu's Debian source package (apt-get source --download-only)
#      and extracts only include/qemu/qemu-plugin.h and tests/plugin/insn.c,
#   4. builds qemu's own example plugin (libinsn.so) and clip-edge's
#      tools/arm/insn_count.c (libinsn_count.so: totals and instruction
#      classes, counted per translated block),
#   5. checks both on a tiny static aarch64 C program.
# Needs root for steps 1-2 (skipped when already done). Idempotent.
# Usage: sudo tools/arm/build_qemu_plugin.sh [OUT_DIR]   (default target/arm/plugins)
# Env: CLIP_EDGE_QEMU_SRC  cache for the source package (default ~/.cache/clip-edge/qemu-src)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/arm/plugins}
src_cache=${CLIP_EDGE_QEMU_SRC:-$HOME/.cache/clip-edge/qemu-src}
mkdir -p "$out" "$src_cache"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. deb-src
if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "adding /etc/apt/sources.list.d/clip-edge-src.sources (deb-src bookworm)"
  as_root tee /etc/apt/sources.list.d/clip-edge-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  as_root apt-get update -q
fi

# 2. dynamic qemu-user (plugins need a dynamically linked qemu), glib headers
static_ver=$(dpkg-query -W -f '${Version}' qemu-user-static 2>/dev/null || true)
need=()
command -v qemu-aarch64 >/dev/null || need+=("qemu-user${static_ver:+=$static_ver}")
dpkg -s libglib2.0-dev >/dev/null 2>&1 || need+=(libglib2.0-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
if [ ${#need[@]} -gt 0 ]; then
  as_root apt-get install -y --no-install-recommends "${need[@]}"
fi
qemu_ver=$(dpkg-query -W -f '${Version}' qemu-user)
src_ver=${qemu_ver%+b*}              # binNMU suffix: same source
echo "qemu-user $qemu_ver (source $src_ver)"

# 3. plugin header and example from the matching source package
upstream=${src_ver#*:}; upstream=${upstream%%+*}   # 7.2
hdr_dir=$src_cache/qemu-$upstream
if [ ! -f "$hdr_dir/include/qemu/qemu-plugin.h" ]; then
  (cd "$src_cache" && apt-get source --download-only -q "qemu=$src_ver")
  orig=$(ls "$src_cache"/qemu_"$upstream"*.orig.tar.* | head -1)
  tar -xf "$orig" -C "$src_cache" \
    "qemu-$upstream.0/include/qemu/qemu-plugin.h" "qemu-$upstream.0/tests/plugin/insn.c"
  rm -rf "$hdr_dir"; mv "$src_cache/qemu-$upstream.0" "$hdr_dir"
fi

# 4. build
cflags=(-O2 -fPIC -shared -Wall -I"$hdr_dir/include/qemu" $(pkg-config --cflags glib-2.0))
libs=($(pkg-config --libs glib-2.0))
gcc "${cflags[@]}" -o "$out/libinsn.so" "$hdr_dir/tests/plugin/insn.c" "${libs[@]}"
gcc "${cflags[@]}" -o "$out/libinsn_count.so" "$root/tools/arm/insn_count.c" "${libs[@]}"

# 5. check on a static aarch64 program with a known loop
cat > "$out/loop.c" <<'C'
int main(void) { volatile long s = 0; for (long i = 0; i < 1000000; i++) s += i; return s == 499999500000L ? 0 : 1; }
C
aarch64-linux-gnu-gcc -O1 -static -o "$out/loop" "$out/loop.c"
log=$(mktemp)
qemu-aarch64 -cpu cortex-a72 -plugin "$out/libinsn.so,inline=on" -d plugin -D "$log" "$out/loop"
a=$(sed -n 's/^insns: //p' "$log")
qemu-aarch64 -cpu cortex-a72 -plugin "$out/libinsn_count.so" -d plugin -D "$log" "$out/loop"
b=$(sed -n 's/^insn_count total //p' "$log")
rm -f "$log"
echo "check: static loop retired $a instructions (qemu's insn plugin), $b (insn_count)"
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" -gt 1000000 ] || { echo "plugin check failed" >&2; exit 1; }
echo "plugins: $out/libinsn.so $out/libinsn_count.so"
