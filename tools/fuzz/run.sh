#!/usr/bin/env bash
# Coverage-guided fuzzing of clip-edge's parsers with libFuzzer (the
# libfuzzer-sys crate), built on the stable toolchain: the coverage flags
# cargo-fuzz passes for `--sanitizer none`, which are all stable, plus debug
# assertions and overflow checks, so that every panic, overflow or failed
# assertion reachable from input is a crash. No AddressSanitizer (nightly
# only); the workspace forbids `unsafe`, so memory errors are not the target.
#
# Usage: tools/fuzz/run.sh [SECONDS] [TARGET...]
#   SECONDS  time per target (default 60)
#   TARGET   store bundle_manifest board_config labels camera_frame image_file
#            (default: all)
# Environment: FUZZ_OUT (default target/fuzz-run): each target's log, the new
# corpus entries it found and any crash input. FUZZ_PROFILE (default release):
# `quick` builds without optimisation, for CI's short run.
# The committed seeds are in tools/fuzz/corpus/TARGET (tools/fuzz/seed.sh
# makes them); new inputs found go to FUZZ_OUT, not into the repository.
# Exit status: 0 when no target crashed, 1 otherwise (the crash input's path
# is printed; turn it into a regression test in tools/fuzz/regressions/).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
seconds=${1:-60}
shift || true
case "$seconds" in '' | *[!0-9]*) echo "run.sh: SECONDS must be a number, not '$seconds'" >&2; exit 2 ;; esac
all=(store bundle_manifest board_config labels camera_frame image_file mqtt_outbox signed_command)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "run.sh: unknown target '$t' (${all[*]})" >&2; exit 2; }
done
out=${FUZZ_OUT:-$root/target/fuzz-run}
host=$(rustc -vV | sed -n 's/^host: //p')
profile=${FUZZ_PROFILE:-release}

t0=$(date +%s)
# --target keeps these flags off build scripts and proc macros, as cargo-fuzz does.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  CARGO_TARGET_DIR="$root/target/fuzz" \
  cargo build --locked --profile "$profile" --manifest-path tools/fuzz/Cargo.toml --target "$host" \
  $(printf -- '--bin %s ' "${targets[@]}")
echo "fuzz: built ${#targets[@]} target(s) ($profile profile) in $(( $(date +%s) - t0 )) s"
bin="$root/target/fuzz/$host/$profile"

mkdir -p "$out"
failed=0
summary=()
for t in "${targets[@]}"; do
  # The corpus grows from run to run; crashes are this run's only.
  rm -rf "$out/$t/crashes"
  mkdir -p "$out/$t/corpus" "$out/$t/crashes"
  log="$out/$t/fuzz.log"
  # -rss_limit_mb: a decoder that allocates past the frame limits is a finding.
  set +e
  "$bin/$t" "$out/$t/corpus" "tools/fuzz/corpus/$t" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=262144 \
    -print_final_stats=1 -artifact_prefix="$out/$t/crashes/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  crashes=$(find "$out/$t/crashes" -type f | wc -l)
  line="$t: ${seconds} s, ${execs:-?} execs, cov ${cov:-?}, corpus $(find "$out/$t/corpus" -type f | wc -l) new, crashes $crashes"
  summary+=("$line")
  echo "fuzz: $line"
  if [ $rc -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc); last lines of $log:" >&2
    tail -n 30 "$log" >&2
    find "$out/$t/crashes" -type f -printf 'fuzz: crash input %p\n' >&2
  fi
done
echo "fuzz summary ($(date -u +%FT%TZ), $(( $(date +%s) - t0 )) s in all):"
printf '  %s\n' "${summary[@]}"
exit $failed
