"""benchmarks/gpu_check.py, the measurements of the one GPU call: its sections end within the call's budget, and
a section whose process crashes (or, on a card, spoils its CUDA context) costs that case alone."""

from __future__ import annotations

import pytest

from conftest import gpu_check_with, load_benchmark

gpu_check = load_benchmark("gpu_check")


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("budget, quick", [(515, False), (255, False), (60, False), (55, True), (0, False),
                                           ("all", False), ("all", True)])
def test_every_section_taking_its_most_and_then_its_stop_still_ends_within_the_budget(budget, quick: bool) -> None:
    clock, ran, report = Clock(), [], {"sections": {}}
    start, every = clock.now, budget == "all"
    if every:  # just enough for every section at its most
        budget = sum((quick_most if quick else most) + gpu_check.STOP_S
                     for _, _, most, quick_most in gpu_check.SECTIONS)

    def run(name: str, title: str, limit: float) -> None:  # stopped at its limit, and slow to stop
        ran.append(name)
        clock.now += limit + gpu_check.STOP_S

    done = list(gpu_check.run_sections(gpu_check.SECTION_NAMES, budget, quick, run, report, clock))
    assert clock.now - start <= budget
    assert done == gpu_check.SECTION_NAMES
    assert ran == gpu_check.SECTION_NAMES[:len(ran)]  # in order: what no card has measured first
    assert all(report["sections"][name]["status"].startswith("skipped") for name in done[len(ran):])
    if every:
        assert ran == done


# The "query" section crashes its process in its second case; "psnr", the next section, runs as usual.
CRASHING = '''
def section_query(ctx, result):
    gpu_check.attempt(ctx, result, "before", lambda: {"value": 1})
    gpu_check.attempt(ctx, result, "crash", lambda: os.kill(os.getpid(), signal.SIGSEGV))
    gpu_check.attempt(ctx, result, "after", lambda: {"value": 3})


def section_psnr(ctx, result):
    gpu_check.attempt(ctx, result, "next", lambda: {"value": 4})
'''


def test_a_section_that_crashes_its_process_loses_that_case_alone(tmp_path) -> None:
    report = gpu_check_with(tmp_path, CRASHING, "--device", "cpu", "--sections", "query,psnr")
    query, psnr = report["sections"]["query"], report["sections"]["psnr"]
    cases = {case["label"]: case for case in query["cases"]}
    assert [case["label"] for case in query["cases"]] == ["before", "crash", "after"]
    assert cases["before"]["value"] == 1 and cases["after"]["value"] == 3
    assert cases["crash"]["error"] == "the section's process was killed by SIGSEGV during this case"
    assert query["status"] == "ok, 1 case(s) failed"
    assert query["notes"] == ["the section's process was killed by SIGSEGV during 'crash'; a new process ran the "
                              "cases after it"]
    assert psnr["status"] == "ok" and psnr["cases"][0]["value"] == 4
    assert (tmp_path / "out" / "gpu_report.md").read_text().count("killed by SIGSEGV") == 2
