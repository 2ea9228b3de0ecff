"""Real training photographs from Debian wallpaper packages: halved (removes JPEG artefacts), PNG, fixed split."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from liif.fileio import atomic_write

# Photographs (0.7 to 20 MP, renders and paintings left out) inside the extracted packages, relative to their root.
PHOTOS = [
    "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg",
    "usr/share/backgrounds/Dragonfly_by_Bolly.jpg",
    "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "usr/share/backgrounds/Picture_0B_by_freespace.jpg",
    "usr/share/backgrounds/Picture_1A_by_freespace.jpg",
    "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg",
    "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/free_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg",
    "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
    "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg",
    "usr/share/backgrounds/mate/nature/Aqua.jpg",
    "usr/share/backgrounds/mate/nature/Blinds.jpg",
    "usr/share/backgrounds/mate/nature/Dune.jpg",
    "usr/share/backgrounds/mate/nature/FreshFlower.jpg",
    "usr/share/backgrounds/mate/nature/Garden.jpg",
    "usr/share/backgrounds/mate/nature/GreenMeadow.jpg",
    "usr/share/backgrounds/mate/nature/LadyBird.jpg",
    "usr/share/backgrounds/mate/nature/RainDrops.jpg",
    "usr/share/backgrounds/mate/nature/Storm.jpg",
    "usr/share/backgrounds/mate/nature/TwoWings.jpg",
    "usr/share/backgrounds/mate/nature/Wood.jpg",
    "usr/share/backgrounds/mate/nature/YellowFlower.jpg",
    "usr/share/palapeli/collection/castle-maintenon.jpg",
    "usr/share/palapeli/collection/cincinnati-bridge.jpg",
    "usr/share/palapeli/collection/citrus-fruits.jpg",
    "usr/share/palapeli/collection/european-honey-bee.jpg",
    "usr/share/palapeli/collection/panther-chameleon-female.jpg",
    "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/Grey/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/Path/contents/images/2560x1600.jpg",
    "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg",
]
VALID_EVERY = 7  # every 7th photograph (in the list's order) goes to validation: a fixed 6/36 split


def photo_name(relpath: str) -> str:
    """A unique PNG name: the wallpaper folder for plasma's size-named files, else the file stem."""
    parts = Path(relpath).parts
    stem = parts[3] if parts[2] == "wallpapers" else Path(relpath).stem
    return f"{stem}.png"


def halve(path: Path) -> Image.Image:
    """The RGB photograph at half size, PIL bicubic (antialiased), which removes most JPEG artefacts."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        return img.resize((img.width // 2, img.height // 2), Image.BICUBIC)


def build_photos(extracted: Path, out: Path, quiet: bool = False) -> tuple[int, int]:
    """Write ``out/train`` and ``out/valid`` PNGs from the extracted packages; (train, valid) counts."""
    counts = [0, 0]
    for i, rel in enumerate(tqdm(PHOTOS, desc="photos", disable=quiet)):
        split = "valid" if i % VALID_EVERY == VALID_EVERY - 1 else "train"
        target = out / split / photo_name(rel)
        if not target.exists():
            atomic_write(target, lambda f: halve(extracted / rel).save(f, format="PNG"))
        counts[split == "valid"] += 1
    return counts[0], counts[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extracted", type=Path, help="folder the .deb packages were extracted into")
    parser.add_argument("out", type=Path, help="output folder (gets train/ and valid/)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    missing = [rel for rel in PHOTOS if not (args.extracted / rel).is_file()]
    if missing:  # before writing any: a wrong folder would otherwise end in a traceback after a partial build
        parser.error(f"{args.extracted / missing[0]}: no such file ({len(missing)} of {len(PHOTOS)} photographs "
                     "missing; scripts/get_photos.sh downloads and extracts the packages)")
    n_train, n_valid = build_photos(args.extracted, args.out, args.quiet)
    print(f"{n_train} training and {n_valid} validation photographs in {args.out}")


if __name__ == "__main__":
    main()
