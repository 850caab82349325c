"""`make data`: put the Dubai aerial data set under data/dubai-aerial (and, when a shared copy exists, the
Massachusetts roads sample under data/massachusetts-roads-sample, the second, optional data set).

Where a shared copy exists (../shared/data/<name>, or $POINTSEG_DATA for Dubai), link it; otherwise say how to get
the public download (Kaggle requires a login, so it is not fetched behind the user's back).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NAME = "dubai-aerial"
URL = "https://www.kaggle.com/datasets/humansintheloop/semantic-segmentation-of-aerial-imagery"


ROADS = "massachusetts-roads-sample"


def link_optional(name: str, marker: str) -> None:
    """Link ../shared/data/<name> when it is there; say nothing otherwise (the data set is optional)."""
    target, shared = Path("data") / name, Path("..") / "shared" / "data" / name
    if not target.exists() and (shared / marker).is_dir():
        target.parent.mkdir(exist_ok=True)
        target.symlink_to(shared.resolve(), target_is_directory=True)
        print(f"{target} -> {shared.resolve()}")


def main() -> int:
    link_optional(ROADS, "images")
    target = Path("data") / NAME
    if target.exists():
        print(f"{target}: present")
        return 0
    candidates = [Path(os.environ["POINTSEG_DATA"])] if os.environ.get("POINTSEG_DATA") else []
    candidates.append(Path("..") / "shared" / "data" / NAME)
    for c in candidates:
        if (c / "Tile 1").is_dir():
            target.parent.mkdir(exist_ok=True)
            target.symlink_to(c.resolve(), target_is_directory=True)
            print(f"{target} -> {c.resolve()}")
            return 0
    print(
        f"error: the data set is not under {target}.\n"
        f"  Download it (free Kaggle account, CC0): {URL}\n"
        f"  e.g. `kaggle datasets download -d humansintheloop/semantic-segmentation-of-aerial-imagery`,\n"
        f"  unzip it and move the folder holding 'Tile 1' … 'Tile 8' to {target}\n"
        f"  (or set POINTSEG_DATA=/path/to/that/folder and run `make data` again).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
