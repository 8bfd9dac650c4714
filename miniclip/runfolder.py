"""A run folder's guards against crashes, kills and a second run: lock, log repair, stop signals.

The Run (miniclip/run.py) uses them:

    with RunLock(run_dir):                      # refuses a folder a live run holds
        history = repair_metrics(run_dir / "metrics.jsonl", step)   # on --resume
        with stop_requests() as stop:           # Ctrl-C, SIGTERM, SIGHUP: stop after this step
            ...

Three things can spoil a run folder, and each has its guard here:
  * two runs writing into one folder (logs interleaved, one wiping the other):
    RunLock, a lock file holding the owner's pid; a lock left by a dead
    process is taken over with a message.
  * a torn or duplicated metrics.jsonl after a crash or a full disk:
    repair_metrics drops a torn last line and the records past the
    checkpoint's step (they are logged again), and rewrites the file atomically.
  * a kill that loses the steps since the last checkpoint: stop_requests turns
    SIGTERM and SIGHUP (a scheduler's stop, a closed terminal) into the same
    "finish this step, checkpoint, exit" as the first Ctrl-C.
"""
import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

LOCK_NAME = "run.lock"


class RunFolderBusy(RuntimeError):
    """Another live process is training into this run folder."""


def _alive(pid):
    """True when a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """Hold run_dir/run.lock (pid, host, start time) while a run writes into run_dir.

    Acquiring is atomic (O_CREAT | O_EXCL). A lock whose process is dead (same
    host) is taken over with a message; a live one -> RunFolderBusy naming its pid.
    Released (the file removed) when the `with` block ends, however it ends.
    """

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def __enter__(self):
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            self.held = True
            return self
        raise RunFolderBusy(f"could not lock {self.path}: another run keeps taking it")

    def _take_over_if_stale(self):
        try:
            owner = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return  # released meanwhile: try again
        except ValueError:
            owner = {}  # a torn lock file: its writer died while writing it
        pid, host = owner.get("pid"), owner.get("host")
        folder = self.path.parent
        if isinstance(pid, int) and host not in (None, socket.gethostname()):
            raise RunFolderBusy(
                f"run folder {folder} is locked by process {pid} on {host}: wait for that run "
                f"to end, or pick another --name. If it is dead, delete {self.path}")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            raise RunFolderBusy(
                f"run folder {folder} is in use by a live run (pid {pid}): wait for it to end "
                f"or stop it, or pick another --name / --out")
        print(f"note: taking over the stale lock of process {pid} in {folder} "
              f"(that process is gone)")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __exit__(self, *exc):
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False
            if self.created:  # a run refused before writing anything leaves no empty folder
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()
        return False


def read_metrics(path):
    """(records, torn): the parsed lines of a metrics.jsonl and how many were unreadable.

    A line is torn when it does not parse (a write cut short by a crash or a full
    disk); only the last line can be torn by an append, but any unparseable line
    is counted and dropped.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    records, torn = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


def repair_metrics(path, step, write=None):
    """Make metrics.jsonl agree with a checkpoint taken at `step`; -> its training records.

    Drops torn lines, the records logged after `step` (the resumed run logs those
    steps again) and the final evaluation (logged again at the end), then
    rewrites the file with `write(path, text)` (an atomic write) when anything
    changed. Returns the kept training records (those with a "loss"), the
    history that summary.json and curves.png are rebuilt from.
    """
    path = Path(path)
    records, torn = read_metrics(path)
    kept = [r for r in records
            if isinstance(r.get("step"), int) and r["step"] <= step and not r.get("final")]
    unterminated = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    if torn or len(kept) != len(records) or unterminated:
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if write is None:
            path.write_text(text)
        else:
            write(path, text)
        dropped = len(records) - len(kept)
        if torn or dropped:
            print(f"note: {path}: dropped {torn} torn line(s) and {dropped} record(s) past "
                  f"step {step} (they are logged again)")
    seen, history = set(), []
    for r in kept:  # one record per step, the last one written
        if "loss" in r and r["step"] not in seen:
            seen.add(r["step"])
            history.append(r)
    return history


class StopFlag:
    """Set by stop_requests when a stop was asked for; `signal` names the one that asked."""
    requested = False
    signal = None


STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                 getattr(signal, "SIGHUP", None)) if s is not None)


@contextlib.contextmanager
def stop_requests(signals=STOP_SIGNALS):
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the loop to stop after the current step (it then
    saves a checkpoint and exits non-zero); a second signal of any of them acts as usual
    (KeyboardInterrupt for Ctrl-C, termination for the others) and nothing is saved."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag                              # signals reach only the main thread
        return
    previous = {}

    def handler(signum, frame):
        flag.requested, flag.signal = True, signal.Signals(signum).name
        for s, old in previous.items():  # a second signal: the usual behaviour
            signal.signal(s, old)
        what = "Ctrl-C" if signum == signal.SIGINT else flag.signal
        print(f"\n{what}: stopping after this step and saving a checkpoint "
              "(send it again to abort without saving)", flush=True)

    for s in signals:
        previous[s] = signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
