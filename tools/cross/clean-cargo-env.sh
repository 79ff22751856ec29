# Sourced (not run) by the scripts that build the device binary into target/cross-release: package.sh and
# tools/vboard/build.sh. Run from `cargo test` (tests/tests/vboard.rs), the environment carries the test's
# CARGO_MANIFEST_DIR and CARGO_PKG_*; ring's build script tracks CARGO_MANIFEST_DIR, so cargo would rebuild the
# device binary (5-6 minutes on 2 cores) although nothing changed.
for v in $(compgen -e | grep -E '^CARGO_(MANIFEST_|PKG_|CRATE_NAME$|BIN_NAME$|PRIMARY_PACKAGE$|TARGET_TMPDIR$)'); do
  unset "$v"
done
unset v
