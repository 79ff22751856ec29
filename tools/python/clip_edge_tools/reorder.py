"""Reordered and dropped writes on the virtual board's disk: what a power cut does
to a card whose volatile cache reorders or drops the writes made since the last
flush (the dm-log-writes / CrashMonkey method, with QEMU's own `blklogwrites`).

Each run boots the virtual board (tools/vboard/) with its ext4 disk attached
through `blklogwrites`, which logs every write and flush the guest sends, and
lets one writer run to its end (`clip-edge-board enroll`, the daemon's
enrolment button, or a store pushed to the daemon over MQTT as `powercut`'s
`push` does; `vboard.record=1`: the guest then unmounts and powers off).
The log is replayed offline onto the image as it was before the run; replaying
all of it must give the image QEMU left, byte for byte. Crash states: every
flush epoch before the crash in full, then a subset of the crash epoch's writes
(every prefix; every subset of a short epoch; in a long one each write alone,
each write left out and a seeded sample), for the epochs from the writer's
start on; above --states per run, every flush point and a seeded sample of the
rest. Each state is checked as the board's next boot sees it: its journal
replayed (`e2fsck -E journal_only`, what the mount does), then `e2fsck -fn`
clean; the store, read with
`debugfs`, is byte for byte the store before the write or the one after it
(never a mix, never missing), and the new one once the state holds every write
the guest had sent when the writer reported its end. A few old-content states
per run are booted: the kernel's journal replay finds the same store, the
self-check passes and one more enrolment lands and unmounts cleanly.

Limits: the card is assumed to honour a flush (what is written before it stays
written); QEMU logs writes in the order they completed; writes are not torn
below a request (ext4 writes 4 KiB blocks).

Standard library only; needs qemu-system-arm, e2fsprogs and the host CLI
(`clip-edge`, for `fewshot list`):

    PYTHONPATH=tools/python python3 -m clip_edge_tools.reorder --runs 10 --bin target/release

Prints a line per run and a JSON summary (also to --out). Exit status 1 when
any check failed. docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import pathlib
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from clip_edge_tools import powercut
from clip_edge_tools.paths import EMOJI_BUNDLE, ROOT

MAGIC = 0x6A736677736872
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
# Every subset of an epoch with at most this many writes is a state.
ALL_SUBSETS_UP_TO = 6


def log(msg: str) -> None:
    print(f"[reorder] {msg}", file=sys.stderr, flush=True)



def settled_size(path: pathlib.Path, quiet: float, within: float) -> int | None:
    """The file's size once it has stayed the same for `quiet` seconds, or None if it has not within `within`."""
    start = time.monotonic()
    size, since = path.stat().st_size, start
    while time.monotonic() - start <= within:
        time.sleep(0.05)
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return size
    return None

class LogError(Exception):
    """The write log is not one this reader understands, or it is cut short."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One logged request: `length` bytes at `offset` on the disk, their data at `data` in the log."""

    index: int
    offset: int
    length: int
    flags: int
    data: int
    end: int


def parse_log(log_bytes: bytes) -> tuple[list[Entry], int]:
    """The entries of a dm-log-writes log (QEMU's `blklogwrites`) and the count its superblock gives.

    Little-endian: a superblock sector (magic, version, entry count, sector size), then each entry as one
    sector holding its header (sector, sector count, flags, data length) followed by its data (none for a
    flush, a mark or a discard)."""
    if len(log_bytes) < 28:
        raise LogError(f"{len(log_bytes)} bytes: no superblock")
    magic, version, count, ss = struct.unpack_from("<QQQI", log_bytes)
    if magic != MAGIC or version != 1:
        raise LogError(f"not a dm-log-writes log (magic {magic:#x}, version {version})")
    if ss < 512 or ss & (ss - 1):
        raise LogError(f"sector size {ss} is not a power of two from 512")
    pos, entries = ss, []
    while pos + ss <= len(log_bytes):
        sector, nr, flags, _ = struct.unpack_from("<QQQQ", log_bytes, pos)
        header_only = not any(log_bytes[pos + 32:pos + ss])
        if flags & ~0xF or (flags == 0 and nr == 0) or (not flags & MARK and not header_only):
            break  # past the last entry: zeros, or what a later, shorter run left
        length = 0 if flags & (DISCARD | MARK) else nr * ss
        if pos + ss + length > len(log_bytes):
            raise LogError(f"entry {len(entries)} at byte {pos} is cut short ({length} data bytes)")
        entries.append(Entry(len(entries), sector * ss, nr * ss, flags, pos + ss, pos + ss + length))
        pos += ss + length
    return entries, count


def epochs(entries: list[Entry]) -> list[list[Entry]]:
    """The writes between flushes (a flush ends an epoch; a FUA write ends the one it is in)."""
    out: list[list[Entry]] = [[]]
    for e in entries:
        if e.flags & FLUSH:
            out.append([])
        if e.length and not e.flags & MARK:
            out[-1].append(e)
        if e.flags & FUA:
            out.append([])
    return out


def apply(img: bytearray, log_bytes: bytes, e: Entry) -> None:
    """Writes one entry onto the image (a discard reads back as zeros)."""
    if e.offset + e.length > len(img):
        raise LogError(f"entry {e.index} writes past the disk's end ({e.offset} + {e.length} > {len(img)})")
    if e.flags & DISCARD:
        img[e.offset:e.offset + e.length] = bytes(e.length)
    else:
        img[e.offset:e.offset + e.length] = log_bytes[e.data:e.data + e.length]


def subsets(n: int, rng: random.Random, sample: int) -> list[tuple[int, ...]]:
    """Which writes of an epoch of `n` reach the disk: every prefix, then every subset when `n` is small,
    else each write alone, each write left out and `sample` seeded subsets. Sorted positions, no repeats."""
    seen: dict[tuple[int, ...], None] = {}
    for k in range(n + 1):
        seen[tuple(range(k))] = None
    if n <= ALL_SUBSETS_UP_TO:
        for r in range(n + 1):
            for c in itertools.combinations(range(n), r):
                seen[c] = None
    else:
        for i in range(n):
            seen[(i,)] = None
            seen[tuple(j for j in range(n) if j != i)] = None
        for _ in range(sample):
            seen[tuple(sorted(rng.sample(range(n), rng.randint(1, n - 1))))] = None
    return list(seen)


def holds_all_before(eps: list[list[Entry]], i: int, chosen: tuple[int, ...], index: int) -> bool:
    """Whether the state made of every epoch before `i` in full and the `chosen` writes of epoch `i` holds every
    write logged before entry `index`."""
    if any(e.index < index for ep in eps[i + 1:] for e in ep):
        return False
    return all(j in chosen for j, e in enumerate(eps[i]) if e.index < index)


def plan_states(eps: list[list[Entry]], first: int, cap: int, rng: random.Random) -> list[tuple[int, tuple[int, ...]]]:
    """The crash states of the epochs that end at or after entry `first`, as (epoch, its writes that reach the
    disk): every flush point (an epoch in full) always, the other subsets sampled down to `cap` states in all."""
    plan = [(i, c) for i, ep in enumerate(eps) if ep and ep[-1].index >= first
            for c in subsets(len(ep), rng, 32)]
    if len(plan) <= cap:
        return plan
    keep = {p for p in plan if len(p[1]) == len(eps[p[0]])}
    rest = [p for p in plan if p not in keep]
    keep |= set(rng.sample(rest, max(0, cap - len(keep))))
    return [p for p in plan if p in keep]


class Campaign:
    def __init__(self, arch: str, bins: pathlib.Path, work: pathlib.Path, img: pathlib.Path, seed: int,
                 limit: float, states: int, boots: int, ignore_flushes: bool = False, push: bool = False):
        self.cli = bins / "clip-edge"
        if not self.cli.is_file():
            raise SystemExit(f"reorder: {self.cli} is missing; build it (cargo build -p clip-edge-tools)")
        for tool in (powercut.MACHINES[arch][0], "mkfs.ext4", "e2fsck", "debugfs"):
            if shutil.which(tool) is None:
                raise SystemExit(f"reorder: {tool} is not installed (apt-get install qemu-system-arm e2fsprogs)")
        self.arch, self.work, self.img, self.limit = arch, work, img, limit
        self.rng = random.Random(seed)
        self.states, self.boots, self.ignore_flushes = states, boots, ignore_flushes
        self.disk, self.log_file, self.state = work / "disk.img", work / "writes.log", work / "state.img"
        self.console = work / "console.txt"
        seed_dir = work / "disk-content"
        seed_dir.mkdir()
        shutil.copy(EMOJI_BUNDLE / "prompts.store", seed_dir / "prompts.store")
        self.pusher = powercut.Pusher(self.cli, work, limit, seed_dir) if push else None
        # Without lazy initialisation: the kernel's background zeroing would fill the log.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "clip-edge", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                        "-d", str(seed_dir), str(self.disk), "32M"], check=True)
        if self.pusher is not None:
            self.pusher.start()  # last: nothing after it can fail before main() owns it
        self.failures: list[str] = []
        self.kinds: dict[str, int] = {}

    def listing(self, data: bytes | None) -> tuple | None:
        return None if data is None else powercut.listing(self.cli, self.work, data)

    def record(self, writer: str, prev: bytes) -> tuple[str, int, int, bytes | None]:
        """One whole run of `writer` with the disk's writes logged: (check line, log size when the writer
        started, log size when it reported its end, the store the guest read at boot)."""
        self.log_file.write_bytes(b"")  # QEMU does not truncate an old log
        drive = ["-blockdev", f"driver=file,node-name=disk-file,filename={self.disk}",
                 "-blockdev", f"driver=file,node-name=log-file,filename={self.log_file}",
                 "-blockdev", "driver=blklogwrites,node-name=disk0,file=disk-file,log=log-file,"
                              "log-sector-size=512,log-super-update-interval=1",
                 "-device", "virtio-blk-device,drive=disk0,write-cache=on,request-merging=off"]
        push = writer == powercut.PUSH
        cmdline = "vboard.record=1" + (f" {self.pusher.cmdline()}" if push else "")
        b = powercut.Boot(self.arch, self.img, self.disk, self.console, writer, drive=drive, cmdline=cmdline, net=push)
        try:
            check = b.wait_for("check exit", self.limit)
            b.wait_for("writer start", self.limit)
            started = self.log_file.stat().st_size
            if push:
                self.pusher.publish(b, prev)
            done = b.wait_for("writer exit", self.limit)
            if not done.startswith("writer exit 0 "):
                raise powercut.BootFailed(f"the writer failed: {done}")
            # The writer's last writes may land just after its end is printed (a pushed store's result event
            # goes to the daemon's outbox; seen on a loaded host): the mark is the log's size once it has not
            # grown for 0.5 s, within 1.5 s, before the guest stops the daemon 2 s after the writer's end.
            finished = settled_size(self.log_file, quiet=0.5, within=1.5)
            if finished is None:
                raise powercut.BootFailed("the disk was still being written 1.5 s after the writer's end")
            b.wait_for("done at", self.limit)
            b.wait_exit(self.limit)
        except powercut.BootFailed:
            b.cut()
            raise
        finally:
            if self.pusher is not None:
                self.pusher.stop()
        if "unmounted" not in b.ours():
            raise powercut.BootFailed("the guest did not unmount the disk")
        return check, started, finished, b.store()

    def read_state(self, img: bytes) -> tuple[str, bytes | None]:
        """Checks a disk image as the next boot would; ('', the store) or (what failed, None)."""
        self.state.write_bytes(img)
        # The journal replayed and nothing else repaired, as the kernel's mount does; then a full check.
        p = subprocess.run(["e2fsck", "-p", "-E", "journal_only", str(self.state)], capture_output=True, text=True)
        if p.returncode >= 4:
            return f"journal replay: e2fsck exit {p.returncode}: {(p.stdout + p.stderr).strip()[-300:]}", None
        p = subprocess.run(["e2fsck", "-fn", str(self.state)], capture_output=True, text=True)
        if p.returncode != 0:
            return f"e2fsck -fn exit {p.returncode} after the journal: {(p.stdout + p.stderr).strip()[-300:]}", None
        p = subprocess.run(["debugfs", "-R", "cat /prompts.store", str(self.state)], capture_output=True)
        if p.returncode != 0 or b"not found" in p.stderr:
            return f"no /prompts.store: {p.stderr.decode(errors='replace').strip()[-200:]}", None
        return "", p.stdout

    def boot_state(self, img: bytes, old: bytes) -> str:
        """Boots a crash state that holds the `old` store: '' when the kernel's mount finds the same store, the
        self-check passes and one more enrolment lands and unmounts cleanly."""
        self.state.write_bytes(img)
        b = powercut.Boot(self.arch, self.img, self.state, self.console, "final")
        try:
            check = b.wait_for("check exit", self.limit)
            done = b.wait_for("writer exit", self.limit)
            b.wait_for("done at", self.limit)
            b.wait_exit(self.limit)
        except powercut.BootFailed as e:
            b.cut()
            return str(e)
        if b.store() != old:
            return "the kernel's journal replay gave another store than e2fsck's"
        if not check.startswith("check exit 0"):
            return check
        if not done.startswith("writer exit 0 ") or "unmounted" not in b.ours():
            return done
        failed, store = self.read_state(self.state.read_bytes())
        if failed:
            return f"after the enrolment: {failed}"
        before = self.listing(old) or ()
        if self.listing(store) not in powercut.enrolled("final", before):
            return "the enrolment after it did not land"
        return ""

    def run(self, runs: int, writers: list[str]) -> dict:
        stats = {"runs": 0, "entries": 0, "flushes": 0, "epochs_cut": 0, "states": 0, "old_content": 0,
                 "new_content": 0, "must_be_new": 0, "bad": 0, "booted_states": 0, "by_writer": {}, "seconds": 0.0}
        t0 = time.monotonic()
        prev = (EMOJI_BUNDLE / "prompts.store").read_bytes()
        for k in range(runs):
            writer = writers[k % len(writers)]
            what = f"run {k + 1} ({writer})"
            base = self.disk.read_bytes()
            t_run = time.monotonic()
            try:
                check, started, finished, read = self.record(writer, prev)
                log_bytes = self.log_file.read_bytes()
                entries, count = parse_log(log_bytes)
                img = bytearray(base)
                for e in entries:
                    apply(img, log_bytes, e)
            except (powercut.BootFailed, LogError) as e:
                self.fail(f"{what}: {e}; console in {self.console}")
                break
            if bytes(img) != self.disk.read_bytes():
                self.fail(f"{what}: replaying the log ({len(entries)} entries) does not give the disk QEMU left")
                break
            if count != len(entries):
                log(f"{what}: the log's superblock counts {count} entries, {len(entries)} were read")
            if not check.startswith("check exit 0"):
                self.fail(f"{what}: {check}")
            if read != prev:
                self.fail(f"{what}: the guest read a store other than the last run's")
            failed, new = self.read_state(bytes(img))
            before = self.listing(prev) or ()
            if writer == powercut.PUSH:
                expected = not failed and new == self.pusher.pushed
            else:
                expected = not failed and self.listing(new) in powercut.enrolled(writer, before)
            if not expected:
                self.fail(f"{what}: the store after the run is not the writer's: {failed}")
                break
            record_s = time.monotonic() - t_run
            r = self.check_run(what, base, log_bytes, entries, started, finished, prev, new)
            w = stats["by_writer"].setdefault(writer, {"runs": 0, "states": 0, "old": 0, "new": 0})
            w["runs"] += 1
            stats["runs"] += 1
            stats["entries"] += len(entries)
            stats["flushes"] += sum(1 for e in entries if e.flags & FLUSH)
            for key, n in r.items():
                stats[key] += n
            w["states"] += r["states"]
            w["old"] += r["old_content"]
            w["new"] += r["new_content"]
            prev = new
            log(f"{what}: {len(entries)} entries, record {record_s:.1f} s, {r['states']} states "
                f"({r['old_content']} old, {r['new_content']} new, {r['must_be_new']} required new), "
                f"{len(self.failures)} failures so far, {time.monotonic() - t0:.0f} s in all")
        stats["bad"] = len(self.failures)
        stats["failures_by_kind"] = self.kinds
        stats["failures"] = self.failures[:20]
        stats["seconds"] = round(time.monotonic() - t0, 1)
        return stats

    def fail(self, msg: str, kind: str = "run") -> None:
        self.failures.append(msg)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        log(msg)

    def check_run(self, what: str, base: bytes, log_bytes: bytes, entries: list[Entry], started: int, finished: int,
                  prev: bytes, new: bytes) -> dict:
        """Checks the crash states of one recorded run whose store went from `prev` to `new`."""
        first = next((e.index for e in entries if e.end > started), len(entries))
        done = sum(1 for e in entries if e.end <= finished)  # every entry the guest had sent by then
        if self.ignore_flushes:
            # A card that acknowledges flushes and keeps nothing of them: the writer's run is one epoch.
            eps = epochs([e for e in entries if not (e.flags & FLUSH and e.index >= first)])
        else:
            eps = epochs(entries)
        plan = plan_states(eps, first, self.states, self.rng)
        r = {"states": 0, "old_content": 0, "new_content": 0, "must_be_new": 0, "epochs_cut": 0,
             "booted_states": 0}
        if not self.ignore_flushes and sum(1 for e in entries if e.flags & FLUSH and e.index >= first) == 0:
            self.fail(f"{what}: no flush after the writer started (a write-through disk?): nothing to reorder")
        # The last old states are the ones closest to the store's write (its temporary file, the rename).
        old_states: collections.deque[bytes] = collections.deque(maxlen=8)
        img = bytearray(base)
        for i, ep in enumerate(eps):
            chosen_sets = [c for j, c in plan if j == i]
            r["epochs_cut"] += bool(chosen_sets)
            for chosen in chosen_sets:
                state = bytearray(img)
                for j in chosen:
                    apply(state, log_bytes, ep[j])
                at = f"{what}, epoch {i} of {len(eps)}, writes {list(chosen)} of {len(ep)}"
                r["states"] += 1
                failed, store = self.read_state(bytes(state))
                required = holds_all_before(eps, i, chosen, done)
                r["must_be_new"] += required
                if failed:
                    self.fail(f"{at}: {failed}", failed.split(":")[0])
                elif store == prev and required:
                    self.fail(f"{at}: the old store, though the writer had reported its end", "lost after its end")
                elif store == prev:
                    r["old_content"] += 1
                    old_states.append(bytes(state))
                elif store == new:
                    r["new_content"] += 1
                else:
                    bad = "invalid" if self.listing(store) is None else "a mix"
                    self.fail(f"{at}: the store is {bad}", bad)
            for e in ep:
                apply(img, log_bytes, e)
        if r["must_be_new"] == 0:
            self.fail(f"{what}: no state was required to hold the new store")
        for state in self.rng.sample(list(old_states), min(self.boots, len(old_states))):
            failed = self.boot_state(state, prev)
            r["booted_states"] += 1
            if failed:
                self.fail(f"{what}: boot of an old-content state: {failed}")
        if self.boots and not r["booted_states"]:
            self.fail(f"{what}: no old-content state to boot")
        return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="recorded writer runs (default 10)")
    ap.add_argument("--states", type=int, default=400,
                    help="crash states per run (default 400); above it, every flush point and a seeded sample of the "
                         "rest")
    ap.add_argument("--boots", type=int, default=2, help="old-content crash states booted per run (default 2)")
    ap.add_argument("--ignore-flushes", action="store_true",
                    help="model a card that ignores flushes (the writer's whole run one epoch): expected to find "
                         "bad states, which shows what the flushes buy and that the checks can fail")
    powercut.add_board_options(ap, "random seed of the sampled states")
    a = ap.parse_args(argv)
    writers, img = powercut.prepare_board(ap, a)
    with tempfile.TemporaryDirectory(prefix="clip-edge-reorder-", dir=ROOT / "target") as d:
        c = Campaign(a.arch, pathlib.Path(a.bin), pathlib.Path(d), img, a.seed, a.boot_timeout, a.states, a.boots,
                     a.ignore_flushes, powercut.PUSH in writers)
        try:
            stats = c.run(a.runs, writers)
        finally:
            if c.pusher is not None:
                c.pusher.close()
        if c.failures:
            for src, kept in ((c.console, "target/reorder-console.txt"), (c.state, "target/reorder-state.img")):
                if src.exists():
                    shutil.copy(src, ROOT / kept)
            log("the last console and state: target/reorder-console.txt, target/reorder-state.img")
    stats.update(arch=a.arch, seed=a.seed, writers=writers, ignore_flushes=a.ignore_flushes)
    text = json.dumps(stats, indent=2)
    print(text)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    bad = stats["bad"] + (stats["runs"] < a.runs)
    log("PASS" if bad == 0 else f"FAIL: {bad} problems")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
