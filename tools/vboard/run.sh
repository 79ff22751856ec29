#!/usr/bin/env bash
# Boots the virtual ARM board (qemu `virt`: aarch64 as a cortex-a72 with 1 GB and
# Debian's arm64 kernel, or armv7 as a cortex-a7 with 512 MB, a Pi Zero 2's
# memory, and Debian's armmp kernel) with the initramfs from
# tools/vboard/build.sh, presses its power
# button (PL061 GPIO line 3) whenever the guest's init asks for it, and collects
# what the daemon did: the console in OUT/serial.log, the daemon's events in
# OUT/events.jsonl, the guest's GPIO state in OUT/gpio.txt.
#
# Usage: tools/vboard/run.sh [--arch A] [--presses N] [--out DIR] [--timeout S] [--no-build] [--bin PATH]
#   --arch A     aarch64 (default) or armv7
#   --presses N  button presses before the camera fault (default 3)
#   --out DIR    output folder (default target/vboard/run, target/vboard-armv7/run)
#   --timeout S  give up after S seconds of emulation (default 600)
#   --no-build   use target/vboard[-armv7]/{vmlinuz,initrd.cpio} as they are
#   --bin PATH   device binary to put on the board (default: cross-build it)
#   --deb PATH   a package from tools/cross/package.sh for the guest to install
#                and check first (the user, the files, `check` as that user)
# Exit status: 0 when the guest's script finished ("vboard: done"), 1 otherwise.
set -euo pipefail
caller=$PWD
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# Paths on the command line are the caller's, relative to where it ran.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
presses=3
arch=aarch64
out=""
limit=600
build=yes
build_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --presses) presses=$2; shift 2 ;;
    --out) out=$(absolute "$2"); shift 2 ;;
    --timeout) limit=$2; shift 2 ;;
    --no-build) build=no; shift ;;
    --bin) build_args+=(--bin "$(absolute "$2")"); shift 2 ;;
    --deb) build_args+=(--deb "$(absolute "$2")"); shift 2 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$presses" in '' | *[!0-9]*) echo "run.sh: --presses takes a number, not '$presses'" >&2; exit 2 ;; esac
if [ $build = no ] && [ ${#build_args[@]} -gt 0 ]; then
  echo "run.sh: --bin and --deb go into the image: they need a build (drop --no-build)" >&2
  exit 2
fi
case "$arch" in
  aarch64) machine=(qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024); img="$root/target/vboard" ;;
  armv7) machine=(qemu-system-arm -M virt -cpu cortex-a7 -smp 2 -m 512); img="$root/target/vboard-armv7" ;;
  *) echo "run.sh: --arch takes aarch64 or armv7, not '$arch'" >&2; exit 2 ;;
esac
[ -n "$out" ] || out="$img/run"
if [ $build = yes ]; then
  tools/vboard/build.sh --arch "$arch" --out "$img" "${build_args[@]}"
fi
for f in vmlinuz initrd.cpio; do
  [ -e "$img/$f" ] || { echo "run.sh: no $img/$f; run tools/vboard/build.sh first" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out"
mkfifo "$out/monitor.in" "$out/monitor.out"
: >"$out/serial.log"
t0=$(date +%s%3N)
"${machine[@]}" -no-reboot -display none -nic none \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.cpio" \
  -append "console=ttyAMA0 rdinit=/init quiet loglevel=3 panic=-1 vboard.presses=$presses" \
  -serial "file:$out/serial.log" -monitor "pipe:$out/monitor" &
qemu=$!
cat "$out/monitor.out" >"$out/monitor.log" &
drain=$!
tail -n +1 -f "$out/serial.log" --pid=$qemu 2>/dev/null | tr -d '\r' \
  | grep --line-buffered -E '^vboard: |^error|"type":"(ready|event|error|stopped)"' &
shown=$!
cleanup() { kill $qemu $drain 2>/dev/null || true; }
trap cleanup EXIT

pressed=0
status=timeout
while kill -0 $qemu 2>/dev/null; do
  asked=$(grep -c '^vboard: press ' "$out/serial.log" || true)
  while [ "$pressed" -lt "$asked" ]; do
    echo system_powerdown >"$out/monitor.in"
    pressed=$((pressed + 1))
    echo "run.sh: pressed the power button ($pressed)"
  done
  if [ $(($(date +%s%3N) - t0)) -gt $((limit * 1000)) ]; then
    echo "run.sh: no poweroff within $limit s; stopping qemu" >&2
    kill $qemu 2>/dev/null || true
    break
  fi
  sleep 0.2
done
wait $qemu 2>/dev/null || true
wait $shown 2>/dev/null || true
wall_ms=$(($(date +%s%3N) - t0))

tr -d '\r' <"$out/serial.log" >"$out/console.txt"
sed -n '/^vboard: events begin/,/^vboard: events end/p' "$out/console.txt" | grep '^{' >"$out/events.jsonl" || true
sed -n '/^vboard: gpio begin/,/^vboard: gpio end/p' "$out/console.txt" | grep -v '^vboard: ' >"$out/gpio.txt" || true
if grep -q '^vboard: done at ' "$out/console.txt"; then status=done
elif grep -q '^vboard: FAIL' "$out/console.txt"; then status=failed
fi
printf 'run.sh: %s after %d.%03d s wall; %d presses; %d events in %s\n' \
  "$status" $((wall_ms / 1000)) $((wall_ms % 1000)) "$pressed" "$(wc -l <"$out/events.jsonl")" "$out/events.jsonl"
[ $status = done ]
