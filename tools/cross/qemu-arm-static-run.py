#!/usr/bin/env python3
"""Cargo runner for armv7 test binaries under qemu-user (tools/cross/test-arm.sh).

Restores the Thumb bit in the IRELATIVE slots of a statically linked 32-bit ARM
executable, then runs it with qemu-arm-static.

Why: Debian 12's GNU ld 2.40 (arm-linux-gnueabihf) writes the address of glibc's
IFUNC resolvers (memcpy_ifunc, memchr_ifunc: Thumb-2 code) into the slots of
R_ARM_IRELATIVE relocations without the Thumb bit once a static executable's
code outgrows ~16 MB (our test binaries: 27 MB of .text); a small static program
gets it right. glibc's start-up (apply_irel) then calls the resolver in ARM
state and the program dies with SIGSEGV before main. The fix is exact: a slot
is changed only when it holds the even address of an STT_GNU_IFUNC symbol whose
value is that address plus 1 (a Thumb function). Idempotent. Boards do not need
it: the device binary is linked dynamically and glibc's IFUNCs are resolved in
libc.so.

Usage (as `CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER`):
    qemu-arm-static-run.py BINARY [ARGS...]
"""

import os
import struct
import sys

R_ARM_IRELATIVE = 160
STT_GNU_IFUNC = 10
SHT_SYMTAB = 2
SHT_REL = 9
PT_LOAD = 1


def thumb_fixes(elf: bytes) -> list[tuple[int, int]]:
    """(file offset, fixed value) for every IRELATIVE slot missing its Thumb bit."""
    if elf[:4] != b"\x7fELF" or elf[4] != 1 or elf[5] != 1 or struct.unpack_from("<H", elf, 18)[0] != 40:
        return []  # not a 32-bit little-endian ARM ELF
    phoff, shoff = struct.unpack_from("<II", elf, 28)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", elf, 42)
    loads = []
    for i in range(phnum):
        p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<5I", elf, phoff + i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))

    def file_offset(vaddr: int) -> int | None:
        for v, o, size in loads:
            if v <= vaddr < v + size:
                return o + vaddr - v
        return None

    sections = [struct.unpack_from("<10I", elf, shoff + i * shentsize) for i in range(shnum)]
    thumb_ifuncs = set()
    for s in sections:
        if s[1] == SHT_SYMTAB:
            off, size, entsize = s[4], s[5], s[9] or 16
            for j in range(size // entsize):
                _, value, _, info = struct.unpack_from("<IIIB", elf, off + j * entsize)
                if info & 0xF == STT_GNU_IFUNC and value & 1:
                    thumb_ifuncs.add(value)
    fixes = []
    for s in sections:
        if s[1] == SHT_REL:
            off, size, entsize = s[4], s[5], s[9] or 8
            for j in range(size // entsize):
                r_offset, r_info = struct.unpack_from("<II", elf, off + j * entsize)
                if r_info & 0xFF != R_ARM_IRELATIVE:
                    continue
                slot = file_offset(r_offset)
                if slot is None:
                    continue
                value = struct.unpack_from("<I", elf, slot)[0]
                if not value & 1 and value | 1 in thumb_ifuncs:
                    fixes.append((slot, value | 1))
    return fixes


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    with open(binary, "rb") as f:
        elf = f.read()
    fixes = thumb_fixes(elf)
    if fixes:
        with open(binary, "r+b") as f:
            for offset, value in fixes:
                f.seek(offset)
                f.write(struct.pack("<I", value))
    qemu = os.environ.get("CLIP_EDGE_QEMU_ARM", "qemu-arm-static")
    os.execvp(qemu, [qemu, "-L", "/usr/arm-linux-gnueabihf", *sys.argv[1:]])


if __name__ == "__main__":
    main()
