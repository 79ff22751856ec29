"""Kill -9 campaign on the host: the operations that write a prompt store
(`clip-edge prompts build --out`, `fewshot add`, `fewshot remove`,
`clip-edge-board enroll`, and the daemon taking a store pushed over MQTT with
`clip-edge publish-store`: the daemon is the process killed) are killed with
SIGKILL at random moments, and after
every kill the store must read back valid and hold either the content before
the operation or the content after it, never a mix; no temporary file may
stay behind once the next write has run; and `clip-edge-board check` must
pass (the daemon starts) at intervals and at the end.

Standard library only, so it runs without the tools' venv; the store push
needs mosquitto (`apt install mosquitto`; the campaign starts its own broker
on 127.0.0.1), or `--no-mqtt` to leave that operation out, which the summary
then says:

    PYTHONPATH=tools/python python3 -m clip_edge_tools.kill9 --kills 1000 --bin target/release

Prints one line per 50 kills and a JSON summary (also to --out). Exit status
1 when any check failed. docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from clip_edge_tools.paths import EMOJI_BUNDLE, ROOT

CLASS = "kill test"
DEVICE = "kill9"
PUSH = "daemon store push"


def log(msg: str) -> None:
    print(f"[kill9] {msg}", file=sys.stderr, flush=True)


def after_enrolment(before: tuple, cls: str, added: int, cap: int = 16) -> tuple:
    """A store's listing after `added` shots of `cls` were enrolled (a new image-only class goes last; at most
    `cap` shots per class, the oldest replaced)."""
    old = next((r for r in before if r[0] == cls), None)
    if old is None:
        return (*before, (cls, "class", False, min(added, cap)))
    shots = min(old[3] + added, cap)
    return tuple((r[0], r[1], r[2], shots) if r[0] == cls else r for r in before)


class Broker:
    """mosquitto on a free port of 127.0.0.1, stopped by close()."""

    def __init__(self, work: pathlib.Path):
        # Debian installs it in /usr/sbin, which a non-root PATH lacks.
        exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        if exe is None:
            raise SystemExit("the daemon store push needs mosquitto on PATH (apt install mosquitto); "
                             "kill9 --no-mqtt, or powercut without push in --writers, leaves it out")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise SystemExit(f"kill9: mosquitto did not listen on 127.0.0.1:{self.port} within 10 s") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Campaign:
    def __init__(self, bins: pathlib.Path, work: pathlib.Path, seed: int, broker: Broker | None):
        self.cli = bins / "clip-edge"
        self.board = bins / "clip-edge-board"
        for b in (self.cli, self.board):
            if not b.is_file():
                raise SystemExit(f"kill9: {b} is missing; build it "
                                 "(cargo build --release -p clip-edge-tools -p clip-edge-board)")
        self.rng = random.Random(seed)
        self.work = work
        self.bundle = EMOJI_BUNDLE
        self.store = work / "prompts.store"
        shutil.copy(self.bundle / "prompts.store", self.store)
        frames = work / "frames"
        frames.mkdir()
        for name in ("dog-google.png", "cat-twitter.png"):
            shutil.copy(self.bundle / "samples" / name, frames / name)
        self.images = [str(frames / n) for n in sorted(os.listdir(frames))]
        self.config = work / "board.toml"
        self.config.write_text(
            f'[model]\nbundle = "{self.bundle}"\nprompts = "{self.store}"\n'
            f'[trigger]\nsource = "stdin"\n[camera]\nsource = "replay"\nfolder = "{frames}"\n'
            f'[enroll]\nclass = "{CLASS}"\n'
        )
        self.ops = {
            "prompts build": ([str(self.cli), "-q", "prompts", "build", "--bundle", str(self.bundle), "--labels",
                               str(self.bundle / "labels.toml"), "--out", str(self.store)], self.after_build),
            "fewshot add": ([str(self.cli), "-q", "fewshot", "add", "--bundle", str(self.bundle), "--prompts",
                             str(self.store), "--class", CLASS, *self.images], self.after_add),
            "fewshot remove": ([str(self.cli), "-q", "fewshot", "remove", str(self.store), "--class", CLASS],
                               self.after_remove),
            "board enroll": ([str(self.board), "enroll", "--config", str(self.config), "--class", CLASS,
                              "--frames", "2", "--interval-ms", "0"], self.after_add),
        }
        self.built = None
        self.durations: dict[str, float] = {}
        self.broker = broker
        self.push_failures = 0
        self.push_kills_during_write = 0
        if broker is not None:
            self.setup_push(broker)

    def setup_push(self, broker: Broker) -> None:
        """A daemon config with signed fleet commands, a key pair, and two stores to push in turn."""
        key = self.work / "fleet"
        p = subprocess.run([str(self.cli), "-q", "keygen", "--out", str(key)], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"kill9: keygen failed: {p.stderr.strip()}")
        self.key = key
        self.url = f"mqtt://127.0.0.1:{broker.port}"
        self.push_stores = [self.work / "push-a.store", self.work / "push-b.store"]
        shutil.copy(self.bundle / "prompts.store", self.push_stores[0])
        shutil.copy(self.bundle / "prompts.store", self.push_stores[1])
        p = subprocess.run([str(self.cli), "-q", "fewshot", "add", "--bundle", str(self.bundle), "--prompts",
                            str(self.push_stores[1]), "--class", "pushed class", *self.images],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"kill9: making the second store to push failed: {p.stderr.strip()}")
        self.push_listings = [self.listing(s) for s in self.push_stores]
        self.push_target = self.push_stores[0]
        self.mqtt_config = self.work / "board-mqtt.toml"
        self.mqtt_config.write_text(
            self.config.read_text().replace(f'[enroll]\nclass = "{CLASS}"\n', "")
            + f'[events]\nstdout = false\n[mqtt]\nurl = "{self.url}"\ndevice = "{DEVICE}"\n'
            f'outbox = "{self.work / "mqtt.outbox"}"\n'
            f'[mqtt.commands]\nenabled = true\npublic_key = "{key}.pub"\nmax_store_bytes = 1048576\n'
        )
        self.ops[PUSH] = (None, self.after_push)

    def push(self, delay: float, at_write: bool = False) -> tuple[bool, float]:
        """Starts the daemon, pushes self.push_target to it once it is connected, SIGKILLs the daemon `delay`
        seconds after the push began (or when the push finished, if sooner); `at_write`: instead, 0-3 ms after
        the daemon logs that it is writing the store. Returns whether the push finished (the daemon replied
        that it took the store) and the seconds from push to the end."""
        log_path = self.work / "daemon.log"
        # The store's own lines: the daemon first writes its command-state file the same way.
        writing, written = (f"{self.store}: {w}".encode() for w in ("writing", "written"))
        with open(log_path, "wb") as log_file:
            daemon = subprocess.Popen([str(self.board), "run", "--config", str(self.mqtt_config)],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log_file,
                                      env={**os.environ, "RUST_LOG": "info,clip_edge_runtime::store=debug"})
        pub = None
        finished, took = False, 0.0
        try:
            deadline = time.monotonic() + 30
            while b"mqtt: connected to" not in log_path.read_bytes():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    raise SystemExit(f"kill9: the daemon did not connect to the broker: {tail}")
                time.sleep(0.01)
            # The daemon subscribes to its command topic right after the ConnAck it just logged; give that
            # subscription time to reach the broker (a push sent before it is lost: counted, never silent).
            time.sleep(0.2)
            started = time.monotonic()
            pub = subprocess.Popen([str(self.cli), "-q", "publish-store", "--json", "--timeout-s", "10", "--broker",
                                    self.url, "--prompts", str(self.push_target), "--key", str(self.key),
                                    "--devices", DEVICE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if at_write:
                while writing not in log_path.read_bytes() and pub.poll() is None:
                    if time.monotonic() - started > delay:
                        break
                    time.sleep(0.0005)
                delay = time.monotonic() - started + self.rng.uniform(0, 0.003)
            try:
                finished = pub.wait(timeout=max(0.0, delay - (time.monotonic() - started))) == 0
                if not finished:
                    self.push_failures += 1
                    log(f"{PUSH}: publish-store ended with status {pub.returncode} before the kill")
            except subprocess.TimeoutExpired:
                finished = False
            took = time.monotonic() - started
            return finished, took
        finally:
            for proc in (daemon, pub):
                if proc is not None and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
            daemon.stdin.close()
            text = log_path.read_bytes()
            if writing in text and written not in text:
                self.push_kills_during_write += 1
            if (pub is not None and not finished and b"accepted" not in text
                    and took > 2 * self.durations.get(PUSH, float("inf"))):
                # Killed well after a push normally ends, and the daemon never took the command: lost, not cut.
                self.push_failures += 1
                log(f"{PUSH}: the daemon had not accepted the command {took * 1e3:.0f} ms after the push")

    # ------------------------------------------------------------ the store's content

    def listing(self, store: pathlib.Path | None = None) -> tuple | None:
        """What the store holds, timestamps aside: (label, kind, text, shots) per entry; None if invalid."""
        p = subprocess.run([str(self.cli), "-q", "fewshot", "list", str(store or self.store), "--json"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return None
        v = json.loads(p.stdout)
        return tuple((e["label"], e["kind"], e["text"], e["shots"]) for e in v["entries"])

    def after_build(self, before: tuple) -> tuple:
        return self.built

    def after_add(self, before: tuple) -> tuple:
        return after_enrolment(before, CLASS, 2)

    def after_remove(self, before: tuple) -> tuple | None:
        if not any(r[0] == CLASS for r in before):
            return None  # refused: nothing to remove, the store stays
        return tuple(r for r in before if r[0] != CLASS)

    def after_push(self, before: tuple) -> tuple:
        """Pushes whichever of the two stores differs from what the board holds."""
        i = 1 if before == self.push_listings[0] else 0
        self.push_target = self.push_stores[i]
        return self.push_listings[i]

    def leftovers(self) -> list[str]:
        return sorted(n for n in os.listdir(self.work) if ".tmp-" in n)

    # ------------------------------------------------------------ runs

    def time_ops(self) -> None:
        """Runs every operation once to the end: its duration bounds the kill moments."""
        for name, (cmd, after) in self.ops.items():
            before = self.listing()
            if cmd is None:
                expected = after(before)
                finished, self.durations[name] = self.push(60.0)
                if not finished:
                    raise SystemExit(f"kill9: {name} failed unkilled (log: {self.work / 'daemon.log'})")
                now = self.listing()
                if now != expected:
                    raise SystemExit(f"kill9: {name} gave {now}, expected {expected}")
                log(f"{name}: {self.durations[name] * 1e3:.0f} ms unkilled (from the push to the reply)")
                continue
            t0 = time.monotonic()
            p = subprocess.run(cmd, capture_output=True, text=True)
            self.durations[name] = time.monotonic() - t0
            if p.returncode != 0:
                raise SystemExit(f"kill9: {name} failed unkilled: {p.stderr.strip()}")
            now = self.listing()
            if name == "prompts build":
                self.built = now
            elif now != after(before):
                raise SystemExit(f"kill9: {name} gave {now}, expected {after(before)}")
            log(f"{name}: {self.durations[name] * 1e3:.0f} ms unkilled")

    def check_board(self) -> bool:
        p = subprocess.run([str(self.board), "check", "--config", str(self.config)], capture_output=True, text=True)
        if p.returncode != 0:
            log(f"clip-edge-board check failed: {p.stderr.strip().splitlines()[-1:]}")
        return p.returncode == 0

    def run(self, kills: int, board_every: int) -> dict:
        stats = {"kills": 0, "killed_while_running": 0, "finished_before_kill": 0, "old_content": 0,
                 "new_content": 0, "invalid": 0, "mixed": 0, "kills_leaving_a_temp_file": 0,
                 "most_temp_files_at_once": 0, "leftover_temp_files": 0,
                 "board_checks": 0, "board_check_failures": 0, "by_operation": {}}
        names = list(self.ops)
        t_start = time.monotonic()
        for k in range(1, kills + 1):
            name = self.rng.choice(names)
            cmd, after = self.ops[name]
            before = self.listing()
            expected = after(before) or before
            # Half the kills land near the end, where the write is (the start is model loading).
            d = self.durations[name]
            delay = self.rng.uniform(0.8 * d, 1.05 * d) if self.rng.random() < 0.5 else self.rng.uniform(0, 1.1 * d)
            if cmd is None:
                # A third of the push kills aim at the store write itself (the rest of its time is start-up).
                at_write = self.rng.random() < 1 / 3
                stats["push_kills_aimed_at_the_write"] = stats.get("push_kills_aimed_at_the_write", 0) + at_write
                finished, took = self.push(10 * d if at_write else delay, at_write)
            else:
                finished, took = self.killed(cmd, delay)
            if finished:  # follow the operation's real duration (the machine's load changes it)
                self.durations[name] = 0.8 * d + 0.2 * took
            elif took > d:  # still running past the estimate: it has grown
                self.durations[name] = 0.8 * d + 0.2 * 1.25 * took
            stats["kills"] += 1
            op = stats["by_operation"].setdefault(name, {"kills": 0, "old": 0, "new": 0, "bad": 0})
            op["kills"] += 1
            stats["finished_before_kill" if finished else "killed_while_running"] += 1
            temps = len(self.leftovers())
            stats["kills_leaving_a_temp_file"] += 1 if temps and not finished else 0
            stats["most_temp_files_at_once"] = max(stats["most_temp_files_at_once"], temps)
            now = self.listing()
            if now is None:
                stats["invalid"] += 1
                op["bad"] += 1
                log(f"kill {k} ({name}, {took * 1e3:.0f} ms): the store does not validate")
                self.reset()
            elif now == expected and (finished or now != before):
                stats["new_content"] += 1
                op["new"] += 1
            elif now == before and not finished:
                stats["old_content"] += 1
                op["old"] += 1
            else:
                stats["mixed"] += 1
                op["bad"] += 1
                log(f"kill {k} ({name}, finished {finished}): neither the old nor the new content: {now}")
                self.reset()
            if board_every and k % board_every == 0:
                stats["board_checks"] += 1
                stats["board_check_failures"] += 0 if self.check_board() else 1
            if k % 50 == 0:
                log(f"{k}/{kills} kills, {time.monotonic() - t_start:.0f} s: "
                    f"{stats['old_content']} old, {stats['new_content']} new, "
                    f"{stats['invalid'] + stats['mixed']} bad")
        # The next write removes what killed writers left; one more write, then none may remain.
        subprocess.run(self.ops["fewshot add"][0], capture_output=True)
        if self.broker is not None:  # and one push, for the command-state file's
            self.after_push(self.listing())
            self.push(60.0)
        stats["leftover_temp_files"] = len(self.leftovers())
        stats["board_checks"] += 1
        stats["board_check_failures"] += 0 if self.check_board() else 1
        if self.broker is not None:
            stats["push_failures"] = self.push_failures
            # Between the daemon's "STORE: writing N bytes through TMP" and "STORE: written" log lines.
            stats["push_kills_during_write"] = self.push_kills_during_write
        stats["seconds"] = round(time.monotonic() - t_start, 1)
        stats["unkilled_ms"] = {n: round(d * 1e3) for n, d in self.durations.items()}
        return stats

    @staticmethod
    def killed(cmd: list[str], delay: float) -> tuple[bool, float]:
        """Runs `cmd`, SIGKILLed after `delay` seconds unless it ended first: (whether it ended, seconds run)."""
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
            return True, time.monotonic() - started
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return False, time.monotonic() - started

    def reset(self) -> None:
        shutil.copy(self.bundle / "prompts.store", self.store)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=1000, help="SIGKILLs in all (default 1000)")
    ap.add_argument("--bin", default=str(ROOT / "target/release"),
                    help="folder with clip-edge and clip-edge-board (default target/release)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of operations and kill moments")
    ap.add_argument("--board-every", type=int, default=25, help="run clip-edge-board check every N kills")
    ap.add_argument("--no-mqtt", action="store_true",
                    help=f"leave out the {PUSH!r} operation (it needs mosquitto)")
    ap.add_argument("--out", help="also write the JSON summary here")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clip-edge-kill9-") as d:
        broker = None if a.no_mqtt else Broker(pathlib.Path(d))
        try:
            c = Campaign(pathlib.Path(a.bin), pathlib.Path(d), a.seed, broker)
            c.time_ops()
            stats = c.run(a.kills, a.board_every)
        finally:
            if broker is not None:
                broker.close()
    if a.no_mqtt:
        stats["left_out"] = f"{PUSH} (--no-mqtt)"
        log(f"SKIPPED: {PUSH} (--no-mqtt)")
    stats["seed"] = a.seed
    text = json.dumps(stats, indent=2)
    print(text)
    if a.out:
        pathlib.Path(a.out).write_text(text + "\n")
    bad = (stats["invalid"] + stats["mixed"] + stats["leftover_temp_files"] + stats["board_check_failures"]
           + stats.get("push_failures", 0))
    log("PASS" if bad == 0 else f"FAIL: {bad} problems")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
