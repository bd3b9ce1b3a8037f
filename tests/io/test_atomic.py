"""Atomic outputs: nothing at OUT until complete, and what a killed process left beside OUT (its
`.OUT.partial-PID-*`) removed by the next write to OUT."""

import os
import signal
import subprocess
import sys
import time

import pytest

from kzoo.io.atomic import atomic_dir, remove_stale_partials


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partials_of_dead_processes_are_removed_others_kept(tmp_path):
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = tmp_path / f".out.partial-{dead_pid()}-abc"
        alive = tmp_path / f".out.partial-{sleeper.pid}-def"
        other = tmp_path / f".other.partial-{dead_pid()}-ghi"  # another OUT's
        for path in (dead, alive, other):
            path.mkdir()
            (path / "big.bin").write_bytes(b"x" * 1000)
        with atomic_dir(out) as tmp:
            (tmp / "f").write_text("done")
        assert (out / "f").read_text() == "done"
        assert not dead.exists() and alive.exists() and other.exists()
        assert remove_stale_partials(tmp_path / "other") == [other]
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("command", ["tflite", "savedmodel"])
def test_sigkill_leftovers_are_cleaned_by_the_next_export(tmp_path, command):
    """A real export killed outright (SIGKILL: no cleanup runs) leaves its partial beside OUT; the
    next export to that OUT removes it and writes OUT."""
    from kzoo.converters.convert import convert
    from kzoo.export import export_savedmodel, export_tflite
    from reference import TINY_ALBERT, make_checkpoint

    convert(make_checkpoint(tmp_path / "ref", "AlbertForMaskedLM", TINY_ALBERT), tmp_path / "model")
    out = tmp_path / ("m.tflite" if command == "tflite" else "sm")
    proc = subprocess.Popen([sys.executable, "-m", "kzoo", "export", command, str(tmp_path / "model"), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = f".{out.name}.partial-{proc.pid}-"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if any(p.name.startswith(partial) for p in tmp_path.iterdir()):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(partial)]
    assert left and not out.exists()  # killed mid-way: its partial stays, nothing at OUT
    (export_tflite if command == "tflite" else export_savedmodel)(tmp_path / "model", out)
    assert out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(partial)]
