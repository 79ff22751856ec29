"""Power cuts on the virtual ARM board (tools/vboard/): the prompt store lies on
an ext4 file system on a virtio-blk disk; every boot the guest reports the
store byte for byte, runs the self-check with it (the daemon starts) and then
runs one writer: `clip-edge-board enroll`, the daemon's enrolment button, or
(`--writers push`) a store pushed to the daemon over MQTT by the host's
`clip-edge publish-store` through a mosquitto broker on 127.0.0.1.
The host kills QEMU at a random moment of that write (a power cut: what the
guest had not flushed is lost), boots again and checks that the store
validates and holds either the content before the write or the content after
it, never a mix, and that a write the guest saw finish survived. At the end
one more write runs to its end, the guest unmounts, and `e2fsck -fn` checks
the disk image.

Standard library only (no venv needed); needs qemu-system-arm, e2fsprogs, the
host CLI (`clip-edge`, for `fewshot list`) and, for pushes, mosquitto:

    PYTHONPATH=tools/python python3 -m clip_edge_tools.powercut --cuts 200 --bin target/release

Prints one line per cut and a JSON summary (also to --out). Exit status 1
when any check failed. docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

from clip_edge_tools.kill9 import Broker, after_enrolment
from clip_edge_tools.paths import EMOJI_BUNDLE, ROOT

CLASS = "power cut"
# The writer that pushes a store to the guest's daemon over MQTT (signed fleet command).
PUSH = "push"
FRAMES = 2
MACHINES = {
    "aarch64": ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"],
    "armv7": ["qemu-system-arm", "-M", "virt", "-cpu", "cortex-a7", "-smp", "2", "-m", "512"],
}


def log(msg: str) -> None:
    print(f"[powercut] {msg}", file=sys.stderr, flush=True)


def listing(cli: pathlib.Path, work: pathlib.Path, data: bytes) -> tuple | None:
    """What a store holds, timestamps aside: (label, kind, text, shots) per entry; None if invalid."""
    f = work / "read.store"
    f.write_bytes(data)
    p = subprocess.run([str(cli), "-q", "fewshot", "list", str(f), "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return tuple((e["label"], e["kind"], e["text"], e["shots"]) for e in json.loads(p.stdout)["entries"])


def enrolled(writer: str, before: tuple) -> list[tuple]:
    """The listings a store may have after one enrolment by `writer`: the CLI enrols FRAMES frames; a button press
    stores the frames captured while it is held (1..=FRAMES)."""
    counts = [FRAMES] if writer in ("enroll", "final") else range(1, FRAMES + 1)
    return [after_enrolment(before, CLASS, n) for n in counts]


class BootFailed(Exception):
    """The guest did not get to its writer: the console's last lines say why."""


class Boot:
    """One boot of the board with the disk attached; the console is read as it grows."""

    def __init__(self, arch: str, img: pathlib.Path, disk: pathlib.Path, out: pathlib.Path, writer: str,
                 drive: list[str] | None = None, cmdline: str = "", net: bool = False):
        """`drive`: QEMU's arguments for the disk `disk0` (default: `disk` as a raw drive); `cmdline`: more
        kernel command line; `net`: a virtio network card on QEMU's user network (the host is 10.0.2.2)."""
        self.console = out
        self.console.write_text("")
        cmdline = (f"console=ttyAMA0 rdinit=/init quiet loglevel=3 panic=-1 vboard.mode=powercut "
                   f"vboard.writer={writer} {cmdline}").strip()
        drive = drive or ["-drive", f"file={disk},format=raw,if=none,id=disk0",
                          "-device", "virtio-blk-device,drive=disk0"]
        self.proc = subprocess.Popen(
            [*MACHINES[arch], "-no-reboot", "-display", "none",
             *(["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"] if net else ["-nic", "none"]),
             "-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.cpio"), "-append", cmdline,
             *drive, "-serial", f"file:{out}", "-monitor", "stdio"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pressed = 0

    def lines(self) -> list[str]:
        """The console's complete lines (QEMU writes it byte by byte: a last line without its newline waits)."""
        text = self.console.read_text(errors="replace").replace("\r", "")
        return text.split("\n")[:-1]

    def ours(self) -> list[str]:
        return [ln[len("vboard: "):] for ln in self.lines() if ln.startswith("vboard: ")]

    def serve(self) -> list[str]:
        """The guest's lines so far; presses the button as often as the guest asked (`press K`)."""
        ours = self.ours()
        asked = sum(1 for ln in ours if ln.startswith("press "))
        while self.pressed < asked:
            self.proc.stdin.write(b"system_powerdown\n")
            self.proc.stdin.flush()
            self.pressed += 1
        failed = [ln for ln in ours if ln.startswith("FAIL")]
        if failed:
            raise BootFailed(failed[0])
        return ours

    def wait_for(self, prefix: str, limit: float) -> str:
        """Waits for the guest's line starting with `prefix`."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            found = [ln for ln in self.serve() if ln.startswith(prefix)]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                raise BootFailed(f"QEMU exited ({self.proc.returncode}) before '{prefix}'")
            time.sleep(0.01)
        raise BootFailed(f"no '{prefix}' within {limit:.0f} s")

    def store(self) -> bytes | None:
        lines = self.lines()
        if "vboard: store missing" in lines:
            return None
        i, j = lines.index("vboard: store begin"), lines.index("vboard: store end")
        return base64.b64decode("".join(lines[i + 1:j]))

    def writes(self) -> int:
        """The store writes begun so far (the runtime's debug line, on the console in this mode)."""
        return sum(1 for ln in self.lines() if "prompts.store: writing " in ln)

    def cut(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def wait_exit(self, limit: float) -> int:
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.cut()
            raise BootFailed(f"no power-off within {limit:.0f} s") from None


class Pusher:
    """The `push` writer's host side: the fleet's key pair (its public half put on the disk), two stores to push in
    turn, a mosquitto broker on 127.0.0.1 (`start`, once nothing else can fail) and `clip-edge publish-store`."""

    def __init__(self, cli: pathlib.Path, work: pathlib.Path, limit: float, seed_dir: pathlib.Path):
        self.cli, self.work, self.limit = cli, work, limit
        self.key = work / "fleet"
        subprocess.run([str(cli), "-q", "keygen", "--out", str(self.key)], check=True, capture_output=True)
        shutil.copy(f"{self.key}.pub", seed_dir / "fleet.pub")
        stores = [work / "push-a.store", work / "push-b.store"]
        for st in stores:
            shutil.copy(EMOJI_BUNDLE / "prompts.store", st)
        samples = sorted((EMOJI_BUNDLE / "samples").glob("*.png"))[:2]
        subprocess.run([str(cli), "-q", "fewshot", "add", "--bundle", str(EMOJI_BUNDLE), "--prompts",
                        str(stores[1]), "--class", "pushed class", *map(str, samples)], check=True, capture_output=True)
        self.stores = [st.read_bytes() for st in stores]
        listings = [listing(cli, work, st) for st in self.stores]
        if None in listings or listings[0] == listings[1]:
            raise SystemExit(f"push: the two stores to push are not two valid, different stores: {listings}")
        self.broker: Broker | None = None
        self.publisher: subprocess.Popen | None = None
        self.pushed: bytes | None = None
        self.lost = 0

    def start(self) -> None:
        self.broker = Broker(self.work)

    def cmdline(self) -> str:
        return f"vboard.broker={self.broker.port}"

    def publish(self, b: Boot, prev: bytes | None) -> None:
        """Once the guest's daemon is connected, pushes the store that differs from what the board holds and
        returns when the daemon has accepted the command (a publish the daemon missed is sent again, counted)."""
        end = time.monotonic() + self.limit
        while not any("mqtt: connected " in ln for ln in b.lines()):
            if time.monotonic() > end or b.proc.poll() is not None:
                raise BootFailed("the guest's daemon did not connect to the broker")
            b.serve()
            time.sleep(0.01)
        self.pushed = next(st for st in self.stores if st != prev)
        path = self.work / "push.store"
        path.write_bytes(self.pushed)
        errors = self.work / "publish.log"
        for _ in range(3):
            with open(errors, "wb") as err:
                self.publisher = subprocess.Popen(
                    [str(self.cli), "-q", "publish-store", "--json", "--timeout-s", "20", "--broker",
                     f"mqtt://127.0.0.1:{self.broker.port}", "--prompts", str(path), "--key", str(self.key),
                     "--devices", "vboard"], stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if any("mqtt: command " in ln and ln.endswith(" accepted") for ln in b.lines()):
                    return
                if b.proc.poll() is not None:
                    raise BootFailed(f"QEMU exited ({b.proc.returncode}) during the push")
                time.sleep(0.005)
            self.stop()
            self.lost += 1
            log(f"push: the daemon did not accept the command within 5 s (publish-store: "
                f"{errors.read_text(errors='replace').strip()[-200:]!r}); publishing again")
        raise BootFailed("the guest's daemon accepted none of 3 pushes")

    def stop(self) -> None:
        """Ends the publisher, if it still runs."""
        if self.publisher is not None and self.publisher.poll() is None:
            self.publisher.kill()
            self.publisher.wait()

    def close(self) -> None:
        self.stop()
        if self.broker is not None:
            self.broker.close()


class Campaign:
    def __init__(self, arch: str, bins: pathlib.Path, work: pathlib.Path, img: pathlib.Path, seed: int,
                 writers: list[str], limit: float):
        self.cli = bins / "clip-edge"
        if not self.cli.is_file():
            raise SystemExit(f"powercut: {self.cli} is missing; build it (cargo build -p clip-edge-tools)")
        for tool in (MACHINES[arch][0], "mkfs.ext4", "e2fsck"):
            if shutil.which(tool) is None:
                raise SystemExit(f"powercut: {tool} is not installed (apt-get install qemu-system-arm e2fsprogs)")
        self.arch, self.work, self.img, self.limit = arch, work, img, limit
        self.rng = random.Random(seed)
        self.writers = writers
        self.disk = work / "disk.img"
        seed_dir = work / "disk-content"
        seed_dir.mkdir()
        shutil.copy(EMOJI_BUNDLE / "prompts.store", seed_dir / "prompts.store")
        self.pusher = Pusher(self.cli, work, limit, seed_dir) if PUSH in writers else None
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "clip-edge", "-d", str(seed_dir), str(self.disk), "32M"],
                       check=True)
        if self.pusher is not None:
            self.pusher.start()  # last: nothing after it can fail before main() owns it
        self.durations: dict[str, float] = {}
        self.modes: dict[str, int] = {}
        self.console = work / "console.txt"

    def listing(self, data: bytes) -> tuple | None:
        return listing(self.cli, self.work, data)

    def boot(self, writer: str) -> tuple[Boot, bytes | None, str]:
        push = writer == PUSH
        b = Boot(self.arch, self.img, self.disk, self.console, writer, net=push,
                 cmdline=self.pusher.cmdline() if push else "")
        try:
            check = b.wait_for("check exit", self.limit)
        except BootFailed:
            b.cut()
            raise
        return b, b.store(), check

    def run(self, cuts: int) -> dict:
        stats = {"cuts": 0, "cut_while_writing": 0, "cut_after_the_write": 0, "old_content": 0, "new_content": 0,
                 "invalid": 0, "mixed": 0, "lost_after_finish": 0, "failed_boots": 0, "check_failures": 0,
                 "by_writer": {}, "fsck": None, "leftover_temp_files": None}
        t_start = time.monotonic()
        prev: bytes | None = (EMOJI_BUNDLE / "prompts.store").read_bytes()
        pending: tuple[str, bool] | None = None  # the last boot's writer and whether it finished before the cut
        for k in range(1, cuts + 2):
            final = k == cuts + 1
            writer = "final" if final else self.writers[(k - 1) % len(self.writers)]
            try:
                b, now, check = self.boot(writer)
            except BootFailed as e:
                stats["failed_boots"] += 1
                log(f"boot {k}: {e}; console in {self.console}")
                break
            if k == 1 and now != prev:
                stats["invalid"] += 1
                log("boot 1: the store is not the one the disk was made with")
            self.judge(stats, k, prev, now, pending)
            if not check.startswith("check exit 0"):
                stats["check_failures"] += 1
                log(f"boot {k}: {check}")
            prev = now
            try:
                b.wait_for("writer start", self.limit)
                if writer == PUSH:
                    self.pusher.publish(b, prev)
                started = time.monotonic()
                if final:
                    done = b.wait_for("writer exit", self.limit)
                    if not done.startswith("writer exit 0 "):
                        raise BootFailed(f"the last writer failed: {done}")
                    b.wait_for("done at", self.limit)
                    b.wait_exit(self.limit)
                    ours = b.ours()
                    if "unmounted" not in ours:
                        raise BootFailed("the guest did not unmount the disk")
                    after = ours[ours.index(done):]
                    files = next((ln for ln in after if ln.startswith("disk files: ")), "").split()
                    stats["leftover_temp_files"] = sum(".tmp-" in n or ".check-" in n for n in files)
                    break
                finished = self.cut_during(b, writer, started)
            except BootFailed as e:
                stats["failed_boots"] += 1
                b.cut()
                log(f"boot {k}: {e}; console in {self.console}")
                break
            finally:
                if self.pusher is not None:
                    self.pusher.stop()
            stats["cuts"] += 1
            stats["cut_after_the_write" if finished else "cut_while_writing"] += 1
            stats["by_writer"].setdefault(writer, {"cuts": 0, "old": 0, "new": 0, "bad": 0})["cuts"] += 1
            pending = (writer, finished)
            if k % 10 == 0 or k == cuts:
                log(f"{k}/{cuts} cuts, {time.monotonic() - t_start:.0f} s: {stats['old_content']} old, "
                    f"{stats['new_content']} new, {stats['invalid'] + stats['mixed'] + stats['lost_after_finish']} bad")
        fsck = subprocess.run(["e2fsck", "-fn", str(self.disk)], capture_output=True, text=True)
        stats["fsck"] = {"exit": fsck.returncode, "last_line": (fsck.stdout.strip().splitlines() or [""])[-1]}
        stats["seconds"] = round(time.monotonic() - t_start, 1)
        stats["write_seconds"] = {w: round(d, 2) for w, d in self.durations.items()}
        stats["cut_moments"] = self.modes
        stats["lost_publishes"] = self.pusher.lost if self.pusher is not None else 0
        return stats

    def cut_during(self, b: Boot, writer: str, started: float) -> bool:
        """Kills QEMU at a random moment of the write; True when the guest said the write had finished."""
        d = self.durations.get(writer)
        if d is None:
            # The first write of its kind runs to its end: its duration bounds the later cut moments.
            done = b.wait_for("writer exit", self.limit)
            if not done.startswith("writer exit 0 "):
                raise BootFailed(f"the writer failed unkilled: {done}")
            self.durations[writer] = time.monotonic() - started
            time.sleep(self.rng.uniform(0, 0.5))
            b.cut()
            return True
        # A third of the cuts anywhere in the write, a third in its last fifth, a third aimed at the store
        # write itself: up to 150 ms after the runtime's "writing" line (the rest is model loading and capture).
        mode = self.rng.choice(["anywhere", "late", "at the write"])
        delay = self.rng.uniform(0, 1.1 * d) if mode == "anywhere" else self.rng.uniform(0.8 * d, 1.05 * d)
        end = started + (self.limit if mode == "at the write" else delay)
        while time.monotonic() < end and not any(ln.startswith("writer exit") for ln in b.serve()):
            if b.proc.poll() is not None:
                raise BootFailed(f"QEMU exited ({b.proc.returncode}) during the write")
            if mode == "at the write" and b.writes():
                end = min(end, time.monotonic() + self.rng.uniform(0, 0.15))
            time.sleep(0.005)
        b.cut()
        self.modes[mode] = self.modes.get(mode, 0) + 1
        exits = [ln for ln in b.ours() if ln.startswith("writer exit")]
        if exits and not re.match(r"writer exit \d+ at ", exits[0]):
            exits = []  # the line was cut short with the power: the exit status is unknown
        if exits and not exits[0].startswith("writer exit 0 "):
            raise BootFailed(f"the writer failed unkilled: {exits[0]}")
        finished = bool(exits)
        if finished:
            self.durations[writer] = 0.8 * d + 0.2 * (time.monotonic() - started)
        return finished

    def judge(self, stats: dict, k: int, prev: bytes | None, now: bytes | None, pending: tuple | None) -> None:
        if pending is None:
            return
        writer, finished = pending
        op = stats["by_writer"][writer]
        before = (self.listing(prev) if prev is not None else None) or ()
        listing = self.listing(now) if now is not None else None
        if listing is None:
            stats["invalid"] += 1
            op["bad"] += 1
            log(f"cut {k - 1} ({writer}): the store {'is missing' if now is None else 'does not validate'}")
            return
        if writer == PUSH:
            new = now != prev and now == self.pusher.pushed
        else:
            new = now != prev and listing in enrolled(writer, before)
        if now == prev and not finished:
            stats["old_content"] += 1
            op["old"] += 1
        elif new:
            stats["new_content"] += 1
            op["new"] += 1
        elif now == prev:
            stats["lost_after_finish"] += 1
            op["bad"] += 1
            log(f"cut {k - 1} ({writer}): the write had finished, the store holds the old content")
        else:
            stats["mixed"] += 1
            op["bad"] += 1
            log(f"cut {k - 1} ({writer}): neither the old nor the new content: {listing}")


def add_board_options(ap: argparse.ArgumentParser, seed_help: str) -> None:
    """The options of a campaign on the virtual board's disk (this one and `reorder`)."""
    ap.add_argument("--arch", choices=sorted(MACHINES), default="aarch64", help="the board (default aarch64)")
    ap.add_argument("--bin", default=str(ROOT / "target/release"),
                    help="folder with the host CLI clip-edge (default target/release)")
    ap.add_argument("--writers", default="enroll,button",
                    help="writers in turn, comma-separated: enroll, button, push (a store pushed over MQTT to "
                         "the daemon; needs mosquitto) (default enroll,button)")
    ap.add_argument("--seed", type=int, default=1, help=seed_help)
    ap.add_argument("--boot-timeout", type=float, default=300, help="seconds a boot may take to each step")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/vboard-powercut[-armv7] as built before (tools/vboard/build.sh --out)")
    ap.add_argument("--out", help="also write the JSON summary here")


def prepare_board(ap: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[list[str], pathlib.Path]:
    """The writers asked for and the board's kernel and initramfs folder, built unless --no-build."""
    # mkfs.ext4 and e2fsck live in /usr/sbin, which a user's PATH may lack.
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    writers = [w for w in a.writers.split(",") if w]
    if not writers or any(w not in ("enroll", "button", PUSH) for w in writers):
        ap.error(f"--writers takes enroll, button and/or push, not '{a.writers}'")
    img = ROOT / ("target/vboard-powercut" + ("" if a.arch == "aarch64" else f"-{a.arch}"))
    if not a.no_build:
        subprocess.run([str(ROOT / "tools/vboard/build.sh"), "--arch", a.arch, "--out", str(img)], check=True)
    os.makedirs(ROOT / "target", exist_ok=True)
    return writers, img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", type=int, default=200, help="power cuts in all (default 200)")
    add_board_options(ap, "random seed of the cut moments")
    a = ap.parse_args(argv)
    writers, img = prepare_board(ap, a)
    with tempfile.TemporaryDirectory(prefix="clip-edge-powercut-", dir=ROOT / "target") as d:
        c = Campaign(a.arch, pathlib.Path(a.bin), pathlib.Path(d), img, a.seed, writers, a.boot_timeout)
        try:
            stats = c.run(a.cuts)
        finally:
            if c.pusher is not None:
                c.pusher.close()
        if stats["failed_boots"]:
            for src, kept in ((c.console, "target/powercut-console.txt"), (c.disk, "target/powercut-disk.img")):
                shutil.copy(src, ROOT / kept)
            log("the failed boot's console and the disk: target/powercut-console.txt, target/powercut-disk.img")
    stats.update(arch=a.arch, seed=a.seed, writers=writers)
    text = json.dumps(stats, indent=2)
    print(text)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    bad = (stats["invalid"] + stats["mixed"] + stats["lost_after_finish"] + stats["failed_boots"]
           + stats["check_failures"] + (stats["leftover_temp_files"] or 0) + (stats["fsck"]["exit"] != 0)
           + (stats["cuts"] < a.cuts))
    log("PASS" if bad == 0 else f"FAIL: {bad} problems")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
