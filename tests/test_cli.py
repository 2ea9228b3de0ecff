"""The command line itself: what argparse refuses is one line like the commands' own errors, on every parser;
--help and --version still print; Ctrl-C while the console script or `python -m liif` still imports torch is
one line too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from liif import __version__
from liif.cli import SUBCOMMANDS, main, stop, stopped_by_signals

# What each subcommand requires, so that the option after it is what gets refused.
REQUIRED = {"upscale": ["in.png"], "eval": ["--data", "hr"], "train": [], "serve": ["pictures"], "view": ["in.png"],
            "zoom": ["in.png"]}


def refusal(capsys, argv: list[str]) -> str:
    """The one line ``liif ARGV`` prints before exiting 2 (the test fails on more lines or another exit code)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == "", captured
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n"), captured.err
    return captured.err[:-1]


@pytest.mark.parametrize("argv,start", [
    ([], "liif: error: the following arguments are required: COMMAND"),
    (["upscal"], "liif: error: argument COMMAND: invalid choice: 'upscal' (choose from "),
    (["--no-such-option"], "liif: error: unrecognized arguments: --no-such-option"),
    (["--no-such-option", "-x"], "liif: error: unrecognized arguments: --no-such-option -x"),
    (["upscale", "in.png", "--scale"], "liif upscale: error: argument --scale: expected one argument"),
    (["upscale", "in.png", "--precision", "fp64"], "liif upscale: error: argument --precision: invalid choice: 'fp64'"),
    (["upscale", "in.png", "--tile", "big"], "liif upscale: error: argument --tile: invalid int value: 'big'"),
    (["serve", "pictures", "--port", "http"], "liif serve: error: argument --port: invalid int value: 'http'"),
    (["zoom", "in.png", "--fps"], "liif zoom: error: argument --fps: expected one argument"),
])
def test_a_command_line_argparse_refuses_is_one_line_naming_the_command(capsys, argv, start):
    line = refusal(capsys, argv)
    command = start.split(": error: ")[0]
    assert line.startswith(start) and line.endswith(f"; see {command} --help"), line


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_names_itself_in_its_refusals(capsys, name):
    """Its unknown options too, which argparse would report as the top-level parser's."""
    assert refusal(capsys, [name, *REQUIRED[name], "--no-such-option"]) == \
        f"liif {name}: error: unrecognized arguments: --no-such-option; see liif {name} --help"
    if REQUIRED[name]:
        assert refusal(capsys, [name]).startswith(f"liif {name}: error: the following arguments are required: ")


def test_control_characters_in_a_refused_argument_keep_the_line_and_the_terminal(capsys):
    assert refusal(capsys, ["upscale", "in.png", "--x\n\x1b[2J"]) == \
        "liif upscale: error: unrecognized arguments: --x\\n\\x1b[2J; see liif upscale --help"


@pytest.mark.parametrize("argv,start", [(["--version"], f"liif {__version__}\n"), (["--help"], "usage: liif ")]
                         + [([name, "--help"], f"usage: liif {name} ") for name in SUBCOMMANDS])
def test_help_and_version_still_print_and_exit_0(capsys, argv, start):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    assert exit_info.value.code == 0 and captured.out.startswith(start) and captured.err == "", captured


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_quiet_option_has_its_short_form(capsys, name):
    """`liif upscale -q` and `liif zoom -q` worked while `liif eval -q` and `liif train -q` were refused."""
    with pytest.raises(SystemExit):
        main([name, "--help"])
    usage = capsys.readouterr().out
    assert ("--quiet" in usage) == ("-q, --quiet" in usage), usage


# Runs the console script's target as pip's generated script does, with torch's import held until SIGINT comes:
# the interrupt lands inside `import liif` whatever the machine's load.
HELD_IMPORT = """
import importlib, signal, sys, time

class HoldTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("importing torch", flush=True)
            time.sleep(600)
        return None

signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal, whatever the test runner ignores
sys.meta_path.insert(0, HoldTorch())
module, _, function = {target!r}.partition(":")
sys.argv[0] = "liif"
sys.exit(getattr(importlib.import_module(module), function)())
"""


def test_ctrl_c_while_the_console_script_imports_torch_is_one_line(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["liif"]
    script = tmp_path / "liif"
    script.write_text(HELD_IMPORT.format(target=target))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, str(script), "upscale", "in.png", "--scale", "2"], env=env,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == "importing torch\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and (out, err) == ("", "liif: interrupted\n"), err


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/maps"), reason="needs /proc to see torch loading")
def test_ctrl_c_while_python_m_liif_imports_torch_is_one_line(tmp_path):
    """A real SIGINT, sent once torch's library is mapped: its import goes on for a while after that, the
    package's import with it. Should it land later, `liif serve` (which runs until interrupted) ends the same."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-m", "liif", "serve", str(tmp_path), "--port", "0", "--device", "cpu"],
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    try:
        deadline = time.monotonic() + 120
        while "libtorch" not in Path(f"/proc/{process.pid}/maps").read_text():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in err and err.endswith(": interrupted\n"), err


def test_sigterm_stops_a_command_in_one_line_as_ctrl_c_does(tmp_path):
    """SIGTERM is how SLURM, Kubernetes and service managers stop a command: `liif serve` (uvicorn shuts down on
    it, then raises it again) ended silently, killed by the signal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-m", "liif", "serve", str(tmp_path), "--port", "0", "--device", "cpu"],
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = process.stderr.readline()
        assert line.startswith("liif serve: serving "), line + process.communicate()[1]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143 and (out, err) == ("", "liif serve: terminated\n"), err


def test_the_command_gives_back_the_signal_handlers_it_found(capsys):
    """A program that runs a command, then goes on, is stopped by Ctrl-C and SIGTERM as before."""
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    refusal(capsys, ["upscale", "in.png", "--scale"])
    assert {signum: signal.getsignal(signum) for signum in found} == found


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_command_a_signal_stopped_gives_back_the_handlers_it_found(monkeypatch, capsys, signum, code):
    """A program that runs a command in its own process (a test runner) goes on after a signal stopped it: the
    command left Ctrl-C and SIGTERM ignored, in that program and in every process it started afterwards."""
    import liif.commands.upscale as upscale_command

    def signalled(args):
        os.kill(os.getpid(), signum)
        time.sleep(10)  # the handler raises before this ends
        return 0

    monkeypatch.setattr(upscale_command, "run", signalled)
    found = {each: signal.getsignal(each) for each in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    with pytest.raises(SystemExit) as stopped:
        main(["upscale", "in.png", "--scale", "2"])
    assert stopped.value.code == code and time.monotonic() - started < 5
    assert capsys.readouterr().err.endswith(f"liif upscale: {'terminated' if code == 143 else 'interrupted'}\n")
    assert {each: signal.getsignal(each) for each in found} == found


def test_a_signal_ignored_when_the_command_starts_stays_ignored():
    """A shell script's background job (`liif train ... &`) ignores Ctrl-C, which is meant for the foreground."""
    found = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopped_by_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is stop
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, found)
