#!/usr/bin/env python3
"""Which crates the device binary's code comes from.

Sums the sizes of text symbols by the crate that leads each demangled name
(`aarch64-linux-gnu-nm -S -C`; generic code counts for the crate that defines
the function, not the one that instantiates it). Build unstripped first:

  RUSTC=/usr/bin/rustc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \\
    CARGO_PROFILE_RELEASE_STRIP=none CARGO_TARGET_DIR=target/bloat \\
    cargo build --release --target aarch64-unknown-linux-gnu -p clip-edge-board
  tools/bench/symbol_sizes.py target/bloat/aarch64-unknown-linux-gnu/release/clip-edge-board [OLD_BINARY]

With a second binary, prints both and the difference (docs/deploy.md).
"""
import collections
import re
import subprocess
import sys


def crates(path, nm="aarch64-linux-gnu-nm"):
    out = subprocess.run([nm, "-S", "--size-sort", "-C", path], capture_output=True, text=True, check=True).stdout
    sizes = collections.Counter()
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[2].lower() not in ("t", "w"):
            continue
        m = re.match(r"^(?:<|_<)?(?:&|\*const |\*mut |dyn )?([a-z_][a-z0-9_]*)::", parts[3])
        sizes[m.group(1) if m else "[non-rust]"] += int(parts[1], 16)
    return sizes


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    new = crates(sys.argv[1])
    old = crates(sys.argv[2]) if len(sys.argv) == 3 else None
    print(f"text symbols: {sum(new.values()):,} bytes" + (f" (was {sum(old.values()):,})" if old else ""))
    keys = sorted(set(new) | set(old or {}), key=lambda k: -max(new.get(k, 0), (old or {}).get(k, 0)))
    for k in keys[:25]:
        if old is None:
            print(f"{k:24s} {new[k]:>12,}")
        else:
            print(f"{k:24s} {new.get(k, 0):>12,} {old.get(k, 0):>12,} {new.get(k, 0) - old.get(k, 0):>+12,}")


if __name__ == "__main__":
    main()
