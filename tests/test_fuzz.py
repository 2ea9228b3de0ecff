"""Property-based fuzzing (Hypothesis, derandomized): hostile files and strings end in a correct result or a
one-line error. Never a traceback, never a hang (each case runs under a time limit), never exit 0 with a wrong
picture.

- Picture files: seeded mutations (truncation, bit flips, overwritten runs, headers spliced from another format)
  of valid PNG (8 and 16 bits), JPEG, WebP and TIFF crops of Set14 comic, through ``liif upscale`` in-process
  and ``liif.imageio.read_picture``.
- Checkpoints: the same mutations of the tiny reference checkpoint, through ``liif.load_model``.
- Strings: ``--scale``, ``--size``, ``--width``, ``--height``, ``--region`` through ``Geometry.parse`` (and a
  few through the CLI), ``--set KEY=VALUE`` through ``load_config`` with real config keys.

Budget: the whole file runs in about a minute on 2 CPU cores; ``max_examples`` is kept small for that.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import io
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import event as hypothesis_event
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from PIL import Image

import liif
from conftest import BENCHMARKS, ROOT, TINY, shared_file
from liif.cli import main
from liif.errors import LiifError
from liif.geometry import MAX_SIDE, Geometry
from liif.imageio import read_picture

CASE_SECONDS = 30  # one case (a decode, a load, a tiny render) takes well under a second: over this is a hang


def fuzz_settings(examples: int) -> settings:
    """Seeded (the same cases on every run, no example database), few examples; no deadline (a hang is caught by
    ``time_limit``, not by a wall-clock assertion)."""
    return settings(derandomize=True, database=None, max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def event(text: str) -> None:
    """Count an outcome in Hypothesis's statistics (``--hypothesis-show-statistics``), outside a test a no-op."""
    try:
        hypothesis_event(text)
    except InvalidArgument:
        pass


class CaseTimeout(BaseException):
    """A case ran over its time: a BaseException, so that no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float = CASE_SECONDS):
    """Fail a case that runs over ``seconds``: SIGALRM interrupts Python code; a hang inside C code that never
    returns to Python is caught by faulthandler's watchdog, which dumps the stacks and ends the run (a failure)."""
    faulthandler.dump_traceback_later(seconds * 3, exit=True, file=sys.__stderr__)

    def on_alarm(signum, frame):
        raise CaseTimeout(f"the case ran over {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def assert_one_line_error(exc: LiifError) -> None:
    message = str(exc)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert "Traceback" not in message


# ------------------------------------------------------------------------------------------------ seed files

SEED_CACHE: dict[str, bytes] = {}
FORMATS = {"png": ".png", "png16": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tiff"}


def seeds() -> dict[str, bytes]:
    """Valid files of a real 24x20 crop of Set14 comic, one per format."""
    if not SEED_CACHE:
        rgb = Image.open(shared_file(BENCHMARKS / "Set14" / "comic.png")).convert("RGB").crop((60, 40, 84, 60))
        for name, (img, options) in {"png": (rgb, {"format": "PNG"}),
                                     "jpeg": (rgb, {"format": "JPEG", "quality": 90}),
                                     "webp": (rgb, {"format": "WEBP", "quality": 90}),
                                     "tiff": (rgb, {"format": "TIFF", "compression": "tiff_lzw"})}.items():
            stream = io.BytesIO()
            img.save(stream, **options)
            SEED_CACHE[name] = stream.getvalue()
        deep = np.asarray(rgb).astype(np.uint16) * 257 + 3  # 16-bit RGB, low bits set: read with pypng
        stream = io.BytesIO()
        png.Writer(deep.shape[1], deep.shape[0], greyscale=False, bitdepth=16).write_array(stream, deep.reshape(-1))
        SEED_CACHE["png16"] = stream.getvalue()
    return SEED_CACHE


MUTATIONS = ["flip", "flip", "flip", "flip_header", "overwrite", "overwrite", "truncate", "truncate", "splice"]


class Mutant:
    """A mutated file: what it came from, the mutations in order, and its bytes (left out of the repr, so that a
    failing case prints as a short line; rerunning the derandomized test rebuilds the same bytes)."""

    def __init__(self, source: str, steps: tuple[str, ...], data: bytes):
        self.source, self.steps, self.data = source, steps, data

    def __repr__(self) -> str:
        return f"Mutant({self.source!r}, {len(self.data)} bytes after: {'; '.join(self.steps) or 'nothing'})"


@st.composite
def mutated(draw, source: str, original: bytes, others: dict[str, bytes]) -> Mutant:
    """``original`` after one to three seeded mutations: bit flips (anywhere, or in the first 64 bytes), a run of
    bytes overwritten, truncation, or the header of another file spliced in front of the body. Positions are
    uniform (a ``Random`` seeded by Hypothesis), so that most mutants keep a readable header and reach the decoder."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    data, steps = bytearray(original), []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        if len(data) < 2:
            break
        if kind in ("flip", "flip_header"):
            top = min(len(data), 64) if kind == "flip_header" else len(data)
            flips = [(rng.randrange(top), rng.randrange(8)) for _ in range(rng.randint(1, 4))]
            for at, bit in flips:
                data[at] ^= 1 << bit
            steps.append("flip " + " ".join(f"{at}.{bit}" for at, bit in flips))
        elif kind == "overwrite":
            start = rng.randrange(len(data))
            run = rng.choice([bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))), b"\xff" * 8,
                              b"\x00" * 8, b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\xff\xff\xff\x7f"])
            data[start:start + len(run)] = run
            steps.append(f"overwrite {start} with {run.hex()}")
        elif kind == "truncate":
            data = data[:rng.randrange(len(data))]
            steps.append(f"truncate to {len(data)}")
        else:
            name = rng.choice(sorted(others))
            head = rng.randint(1, min(len(others[name]), 128))
            cut = rng.randint(0, min(len(data), 128))
            data = bytearray(others[name][:head]) + data[cut:]
            steps.append(f"splice {head} bytes of {name} over the first {cut}")
    return Mutant(source, tuple(steps), bytes(data))


def picture_cases():
    return st.sampled_from(sorted(FORMATS)).flatmap(
        lambda fmt: mutated(fmt, seeds()[fmt], {k: v for k, v in seeds().items() if k != fmt}))


@functools.lru_cache(maxsize=None)
def tiny() -> torch.nn.Module:
    return liif.load_model(shared_file(TINY))


@contextlib.contextmanager
def torch_threads_kept():
    """``--threads 1`` sets torch's threads for the process: put them back for the other tests."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# categories Python does not print by default: everything else would reach a user's terminal
SILENT_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def stderr_as_a_terminal_sees_it():
    """Collect what ``liif`` would show on stderr: ``sys.stderr``, the warnings Python prints by default (pytest
    would otherwise catch them), and what C libraries (libtiff, libpng) write straight to file descriptor 2."""
    text = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as c_level, warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stderr(text):
            warnings.simplefilter("always")
            os.dup2(c_level.fileno(), 2)
            try:
                yield text
            finally:
                os.dup2(saved, 2)
                c_level.seek(0)
                shown = [w for w in caught if not issubclass(w.category, SILENT_WARNINGS)]
                text.write("".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                                   for w in shown))
                text.write(c_level.read().decode("utf-8", "replace"))
    finally:
        os.close(saved)


def run_upscale(args: list[str]) -> tuple[int, str]:
    """``liif upscale ARGS`` in-process: (exit code, all it shows on stderr)."""
    with torch_threads_kept(), stderr_as_a_terminal_sees_it() as err, time_limit():
        with pytest.raises(SystemExit) as exit_info:
            main(["upscale", *args])
    return exit_info.value.code, err.getvalue()


def check_upscale_file(path: Path, model) -> None:
    """The CLI on ``path``: exit 0 with the right picture, or exit 1/2 with one error line and no output."""
    out = path.parent / "out" / "up.png"
    out.parent.mkdir()
    code, err = run_upscale([str(path), "--scale", "2", "-o", str(out), "--model", str(TINY), "--threads", "1",
                             "--quiet"])
    assert "Traceback" not in err, err
    event(f"exit {code}")
    if code != 0:
        assert code in (1, 2), (code, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("liif upscale: error: ") and err.endswith("\n"), \
            f"not one error line:\n{err}"
        assert not any(out.parent.iterdir()), "a failed run left a file behind"
        return
    assert err == "", f"exit 0 with this on stderr:\n{err}"
    # exit 0: the input reads, and the output is its x2 rendering, whole and of the right size and channels
    with time_limit():
        picture = read_picture(path)
        expected = liif.upscale(picture, scale=2, model=model, device="cpu")
        written = read_picture(out)
    h, w = picture.pixels.shape[:2]
    assert written.pixels.shape == (math.floor(2 * h + 0.5), math.floor(2 * w + 0.5), picture.pixels.shape[2])
    assert written.pixels.dtype == picture.pixels.dtype
    assert expected.pixels.shape == written.pixels.shape
    diff = np.abs(expected.pixels.astype(np.int64) - written.pixels.astype(np.int64))
    assert diff.max() <= max(1, picture.max_value // 255) and diff.mean() < 0.05, "exit 0 with a wrong picture"


def check_read_picture(path: Path) -> None:
    with time_limit():
        try:
            picture = read_picture(path)
        except LiifError as exc:
            assert_one_line_error(exc)
            event(f"read_picture: {str(exc)[:40]}")
            return
    event("read_picture: read")
    pixels = picture.pixels
    assert pixels.dtype in (np.uint8, np.uint16) and pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4)
    assert pixels.size > 0


def test_unmutated_seeds_upscale_correctly():
    """The harness's exit-0 path: every seed file gives its exact x2 rendering through the CLI."""
    for fmt, data in seeds().items():
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"in{FORMATS[fmt]}"
            path.write_bytes(data)
            check_upscale_file(path, tiny())
            assert (Path(folder) / "out" / "up.png").is_file()


def check_mutant(mutant, check) -> None:
    """Write ``mutant`` as a file named like its source format in a fresh folder and ``check`` it there."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"in{FORMATS[mutant.source]}"
        path.write_bytes(mutant.data)
        check(path)


@fuzz_settings(examples=200)
@given(mutant=picture_cases())
def test_mutated_pictures_through_the_cli(mutant):
    check_mutant(mutant, lambda path: check_upscale_file(path, tiny()))


@fuzz_settings(examples=600)
@given(mutant=picture_cases())
def test_mutated_pictures_through_read_picture(mutant):
    check_mutant(mutant, check_read_picture)


def test_a_damaged_tiff_is_one_line_in_a_real_process(tmp_path):
    """Found by the fuzzing above: a TIFF whose StripByteCounts entry claims more data than the file holds made
    Pillow warn (two lines) and libtiff print on file descriptor 2, around the error line. A real process, so
    that what C code writes to the terminal counts."""
    data = bytearray(seeds()["tiff"])
    entry = data.find(b"\x17\x01\x04\x00")  # tag 279 (StripByteCounts), type LONG, little-endian
    assert entry > 0
    data[entry + 4:entry + 12] = b"\xff" * 7 + b"\x7f"  # its count and offset
    (tmp_path / "bad.tiff").write_bytes(data)
    run = subprocess.run([sys.executable, "-m", "liif", "upscale", str(tmp_path / "bad.tiff"), "--scale", "2", "-o",
                          str(tmp_path / "out.png"), "--model", str(shared_file(TINY)), "--quiet"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"liif upscale: error: {tmp_path / 'bad.tiff'}: "), run.stderr


# ------------------------------------------------------------------------------------------------ checkpoints

def checkpoint_cases():
    original = shared_file(TINY).read_bytes()
    others = {"png": seeds()["png"], "zip magic": b"PK\x03\x04", "plain pickle": b"\x80\x02}q\x00.",
              "its own start": original[:200]}
    return mutated("tiny-edsr-liif.pth", original, others)


@fuzz_settings(examples=200)
@given(mutant=st.deferred(checkpoint_cases))
def test_mutated_checkpoints_through_load_model(mutant):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pth"
        path.write_bytes(mutant.data)
        with time_limit(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = liif.load_model(path)
            except LiifError as exc:
                assert_one_line_error(exc)
                event(f"load_model: {str(exc).split(': ', 1)[-1][:50]}")
                model = None
            if model is not None:
                event("load_model: loaded")
                # loaded: the weights fit the spec and are finite, so the model renders finite colours
                pixels = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
                out = liif.render(model, pixels, (12, 12))
                assert out.shape == (1, 3, 12, 12) and torch.isfinite(out).all()
        shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, SILENT_WARNINGS)]
        assert not shown, f"warnings a user would see besides the result: {shown}"


def hostile_structures():
    """Well-formed files whose content is not: (name, a change to the tiny checkpoint's dict, words of the error)."""
    def args(ckpt):
        return ckpt["model"]["args"]

    yield "name not a string", lambda c: c["model"].update(name=["liif"]), "model name must be a string"
    yield "args a list", lambda c: c["model"].update(args=[1]), "dict of 'args'"
    yield "an integer argument name", lambda c: args(c).update({1: 2}), "no argument 1"
    yield "encoder spec a string", lambda c: args(c).update(encoder_spec="edsr"), "dict of 'args'"
    yield "n_feats a string", lambda c: args(c)["encoder_spec"]["args"].update(n_feats="16"), "edsr-baseline"
    yield "n_feats 10**30", lambda c: args(c)["encoder_spec"]["args"].update(n_feats=10**30), "edsr-baseline"
    yield "hidden_list a string", lambda c: args(c)["imnet_spec"]["args"].update(hidden_list="32"), "mlp"
    yield "a spec inside itself", lambda c: args(c).update(encoder_spec={"name": "liif", "args": args(c)}), "liif"
    yield "an integer key in sd", lambda c: c["model"]["sd"].update({3: torch.zeros(1)}), "parameter names"
    for dtype in (torch.int64, torch.bool, torch.complex64):
        yield (f"a {dtype} weight", lambda c, dtype=dtype: c["model"]["sd"].update(
            {"imnet.layers.0.bias": torch.zeros(32, dtype=dtype)}), "not a real floating-point tensor")
    yield "data_norm 10**400", lambda c: c.update(data_norm={"inp": {"sub": [10**400], "div": [1]},
                                                             "gt": {"sub": [0.5], "div": [0.5]}}), "data_norm"
    yield "data_norm a string", lambda c: c.update(data_norm="x"), "data_norm"
    yield "an empty dict", lambda c: c.clear(), "not a LIIF checkpoint"


@pytest.mark.parametrize("name,change,words", list(hostile_structures()), ids=lambda v: v if isinstance(v, str) else "")
def test_hostile_checkpoint_structures_are_one_line_errors(tmp_path, name, change, words):
    ckpt = torch.load(shared_file(TINY), weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "model.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either (a complex weight was cast with one)
        with pytest.raises(LiifError, match=words) as error:
            liif.load_model(tmp_path / "model.pth")
    assert_one_line_error(error.value)


# ------------------------------------------------------------------------------------------------ strings

NUMBERISH = ["1e308", "-1e308", "1e999", "inf", "-inf", "Infinity", "nan", "NaN", "-0", "0", "+0", "0.0", "-1",
             "2", "2.5", "1e-400", "5e-324", "0x10", "0o17", "0b1", "1_000", "١٢", "½", "2,", ",", ",,", "", " ",
             "\t", "1 ", " 2", "2 3", "9" * 400, "1" + "0" * 30, "16777216", "16777217", "1e7", "3/2", "2e", "e2",
             "..", "-", "+", "x", "2x", "x2", "1x1", "0x0", "999999999x999999999", "true", "null", "~", "\x00",
             "2\n3", "，", "2，3", "１２"]


def numberish() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NUMBERISH), st.text(max_size=12),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.integers(-(1 << 70), 1 << 70).map(str))


def joined(count: int, separator: str) -> st.SearchStrategy[str]:
    return st.lists(numberish(), min_size=count - 1, max_size=count + 1).map(separator.join)


GEOMETRY_STRINGS = {
    "scale": st.one_of(numberish(), joined(2, ",")),
    "size": st.one_of(numberish(), joined(2, "x"), joined(2, "X")),
    "width": numberish(),
    "height": numberish(),
    "region": st.one_of(numberish(), joined(4, ",")),
}


@fuzz_settings(examples=1000)
@given(option=st.sampled_from(sorted(GEOMETRY_STRINGS)), data=st.data())
def test_geometry_strings_parse_or_fail_in_one_line(option, data):
    text = data.draw(GEOMETRY_STRINGS[option], label=option)
    request = {option: text} if option != "region" else {"scale": "2", "region": text}
    with time_limit():
        try:
            geometry = Geometry.parse(**request)
            target = geometry.target((20, 24))
        except LiifError as exc:
            assert_one_line_error(exc)
            return
    assert all(isinstance(n, int) and 1 <= n <= MAX_SIDE for n in target.size)
    x0, y0, x1, y1 = target.region
    assert 0 <= x0 < x1 <= 24 and 0 <= y0 < y1 <= 20


@pytest.mark.parametrize("option,value", [("--scale", v) for v in ("1e308", "nan", "-0", "2,", ",", "1e-400",
                                                                    "0x10", "١٢", "inf", "2,nan", "")]
                         + [("--region", v) for v in ("0,0,1e308,1", "nan,0,1,1", "0,0,12,10,", "1,1,1,1", "-0,0,5,5")]
                         + [("--size", v) for v in ("0x0", "1e308x2", "3x")])
def test_number_strings_through_the_cli(tmp_path, option, value):
    path = tmp_path / "in.png"
    path.write_bytes(seeds()["png"])
    out = tmp_path / "out" / "up.png"
    out.parent.mkdir()
    geometry = [f"{option}={value}"] + (["--scale", "2"] if option == "--region" else [])
    code, err = run_upscale([str(path), *geometry, "-o", str(out), "--model", str(shared_file(TINY)), "--threads",
                             "1", "--quiet", "--max-pixels", "1e5"])
    assert "Traceback" not in err, err
    if code == 0:  # a valid request (x12 in Arabic-Indic digits, a region): the picture is there
        assert err == "" and out.is_file()
        return
    lines = err.splitlines()
    assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("liif upscale: error: "), err


@functools.lru_cache(maxsize=None)
def config_keys() -> list[str]:
    """Every dotted key of the smoke config and of the schema's top level."""
    from liif.training.config import SCHEMA, load_config

    keys: set[str] = set(SCHEMA)

    def walk(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            keys.add(dotted)
            if isinstance(value, dict):
                walk(value, dotted + ".")

    walk(load_config(ROOT / "configs" / "smoke.yaml"), "")
    return sorted(keys)


YAMLISH = ["[1, 2]", "[]", "{}", "{a: 1}", "[" * 50 + "]" * 50, "[" * 3000, "{" * 3000,
           "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "&a [*a]", "*x", "'unterminated",
           '"\\x"', "- a", "a: b: c", "? x", "!!binary AAAA", "2001-12-14", "2001-12-14 21:59:43.10 -5",
           "!!float abc", "!!int 1.5", "!!str", "!!set {a, b}", "!!omap [a: 1]", "%YAML 1.1", "---", "...",
           "a\n  b: - c", "key=value", "=", "==", "1e-3", "1.e-3", ".5", "1:30", "0o7", "0x1F", "1_0", "yes", "no",
           "on", "off", "Null", "NULL", ".NaN", "-.inf", "[1e308, -1e308]", "[.nan]", "{sub: [0.5], div: [0]}",
           "{inp: {sub: [1], div: [0]}}", "[-1]", "-1", "0", "10000000000000000000000", "[1, [2, [3]]]"]


@fuzz_settings(examples=400)
@given(data=st.data())
def test_set_overrides_load_or_fail_in_one_line(data):
    from liif.training.config import load_config, parse_override

    key = data.draw(st.one_of(st.sampled_from(config_keys()), st.text(max_size=20)), label="key")
    value = data.draw(st.one_of(st.sampled_from(YAMLISH + NUMBERISH), st.text(max_size=30)), label="value")
    with time_limit():
        try:
            config = load_config(ROOT / "configs" / "smoke.yaml", [f"{key}={value}"])
        except LiifError as exc:
            assert_one_line_error(exc)
            return
    path, parsed = parse_override(f"{key}={value}")
    for part in path:  # the override took effect where it says
        config = config[part]
    assert config == (float(parsed) if isinstance(config, float) else parsed), (path, parsed, config)
