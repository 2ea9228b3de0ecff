"""The GPU call (benchmarks/gpu_run.sh) ends within its time. Its test stage ends whole: a test stopped from
outside, by the stage's time limit (SIGTERM) or by pytest-timeout (a failure raised while it waits), ends the
processes it started, which would otherwise go on using the card while gpu_check measures it; and gpu_check gets
no more time than the call has left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

# A test that waits on a child as the GPU tests do (run_group: its own process group), the child writing its pid.
# ``alarm``: stopped as pytest-timeout stops a test (SIGALRM, then a failure raised in the test).
INNER = '''
import os, signal, sys

import pytest

from conftest import run_group

CHILD = "import os, time; open(os.environ['CHILD_PID'], 'w').write(str(os.getpid())); time.sleep(120)"


def test_waits_on_a_child():
    if os.environ.get("ALARM"):
        signal.signal(signal.SIGALRM, lambda *_: pytest.fail("Timeout >5.0s"))
        signal.alarm(5)
    run_group([sys.executable, "-c", CHILD], timeout=100, env=dict(os.environ))
'''


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("stop", ["sigterm", "pytest-timeout"])
def test_a_stopped_test_ends_the_process_group_it_waits_on(tmp_path: Path, stop: str) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    child_pid = tmp_path / "child.pid"
    env = {**os.environ, "CHILD_PID": str(child_pid),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if stop == "pytest-timeout":
        env["ALARM"] = "1"
    xml = tmp_path / "tests.xml"
    pytest_run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "--rootdir", tmp_path,
         f"--junitxml={xml}", tmp_path / "test_inner.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    pid = None
    try:
        deadline = time.monotonic() + 120
        while not (child_pid.exists() and child_pid.read_text()) and pytest_run.poll() is None:
            assert time.monotonic() < deadline, "the inner test never started its child"
            time.sleep(0.1)
        pid = int(child_pid.read_text())
        if stop == "sigterm":
            pytest_run.send_signal(signal.SIGTERM)  # as `timeout` stops the tests
        out, _ = pytest_run.communicate(timeout=60)
        assert pytest_run.returncode != 0, out
        assert not running(pid), f"the test's child {pid} outlived it\n{out}"
        assert xml.exists(), out  # pytest still wrote its report
        assert ("KeyboardInterrupt" if stop == "sigterm" else "Timeout >5.0s") in out, out
    finally:
        pytest_run.kill()
        if pid is not None and running(pid):
            os.kill(pid, signal.SIGKILL)


def test_gpu_check_gets_no_more_than_what_the_call_has_left(tmp_path: Path) -> None:
    """The set-up and tests took all of END_BY: gpu_check still writes its report, every section skipped, instead
    of taking time the call does not have."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "END_BY": "20", "GPU_TESTS": "0", "LIIF_SHARED": str(tmp_path),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
           "GPU_CHECK_ARGS": "--device cpu --sections device,query"}
    result = subprocess.run(["bash", ROOT / "benchmarks" / "gpu_run.sh"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["budget_s"] == 0 and report.get("finished"), report
    assert [section["status"] for section in report["sections"].values()] == ["skipped: the 0 s budget is spent"] * 2
