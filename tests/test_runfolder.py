"""Run-folder guards (issue 12, item 2 and 3): the lock, metrics.jsonl repair, stop signals."""
import json
import os
import signal
import subprocess
import sys

import pytest

from miniclip.runfolder import RunFolderBusy, RunLock, read_metrics, repair_metrics, stop_requests


def test_second_lock_on_a_live_folder_is_refused(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run.lock").write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
        with pytest.raises(RunFolderBusy, match=f"pid {child.pid}"):
            with RunLock(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free
    (tmp_path / "run.lock").write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().out
    assert not (tmp_path / "run.lock").exists()  # released


def test_lock_released_on_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path):
            1 / 0
    with RunLock(tmp_path):
        pass


def test_repair_drops_torn_line_and_records_past_the_checkpoint(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 4, "eval": {"a": 1}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "lo')  # torn
    history = repair_metrics(path, 4)
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    records, torn = read_metrics(path)
    assert torn == 0 and [r["step"] for r in records] == [1, 2, 3, 4, 4]
    assert path.read_text().endswith("\n")
    assert "1 torn line" in capsys.readouterr().out


def test_repair_drops_the_final_evaluation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 2, "loss": 0.5}) + "\n"
                    + json.dumps({"step": 2, "eval": {}, "final": True}) + "\n")
    assert [r["step"] for r in repair_metrics(path, 2)] == [2]
    assert len(read_metrics(path)[0]) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_set_the_flag(signum):
    before = signal.getsignal(signum)
    if before == signal.SIG_IGN:          # e.g. SIGHUP under nohup: would end pytest's process
        signal.signal(signum, signal.SIG_DFL)
    try:
        usual = signal.getsignal(signum)
        with stop_requests() as stop:
            signal.raise_signal(signum)
            assert stop.requested and stop.signal == signal.Signals(signum).name
            # a second one is the usual behaviour again
            assert signal.getsignal(signum) == usual
        assert signal.getsignal(signum) == usual
    finally:
        signal.signal(signum, before)
