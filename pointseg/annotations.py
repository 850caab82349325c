"""Real clicked points: read from GeoJSON or CSV, placed on the scenes' pixels, exported for QGIS.

Formats (``points.source: file``, ``points.file: <path>``):

- **GeoJSON** (QGIS, any labelling tool): Point or MultiPoint features, the class in a property (``class`` by
  default: a class name or a 0-based index). Coordinates are map coordinates in the file's ``crs`` member (e.g.
  ``{"type": "name", "properties": {"name": "EPSG:32640"}}``); without one they are longitude/latitude (EPSG:4326,
  RFC 7946). Each point is reprojected with rasterio into every scene's CRS and lands on the scene that contains
  it. A feature with ``image``, ``row`` and ``col`` properties (what ``pointseg points --geojson`` writes for a
  raster without georeferencing) is placed by pixel instead.
- **CSV**: columns ``image,row,col,class`` (pixel row/column of that image at its full resolution, ``image`` its
  path under the data root or its file name), or ``x,y,class`` in map coordinates with ``points.crs``.

Every click gets a status, written to the run's ``points.csv``: ``train`` / ``val`` / ``test`` (the split of the
scene it landed on; only ``train`` clicks are trained on, ``val`` clicks can select the checkpoint), ``outside``
(on no scene of the data set), ``nodata`` (on a no-data pixel), ``duplicate`` (a second click on the same
working-scale pixel). Counts are logged and stored in ``points.json``: nothing is dropped silently. An unknown class
is an error naming the file and the class.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as reproject_points

from .data.raster import IGNORE_INDEX, DataError, _open

log = logging.getLogger("pointseg.annotations")


@dataclass
class Click:
    index: int  # position in the file (0-based), so the run's points.csv can name every input click
    cls: int
    x: float | None = None  # map coordinates in ``crs``
    y: float | None = None
    crs: str | None = None
    image: str | None = None  # pixel placement: an image name with its full-resolution row and column
    row: float | None = None
    col: float | None = None


def _class_index(value, names: list[str], path: Path, where: str) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        if 0 <= int(value) < len(names):
            return int(value)
    elif isinstance(value, str):
        lowered = {n.lower(): i for i, n in enumerate(names)}
        if value.strip().lower() in lowered:
            return lowered[value.strip().lower()]
    raise DataError(f"{path}: {where}: unknown class {value!r}; classes are {names} (or their 0-based index)")


def _geojson_crs(doc: dict, path: Path) -> str | None:
    member = doc.get("crs")
    if not member:
        return None
    name = (member.get("properties") or {}).get("name") if isinstance(member, dict) else None
    try:
        return CRS.from_user_input(name).to_string()
    except (CRSError, TypeError) as e:
        raise DataError(f"{path}: its crs member {member!r} is not a CRS rasterio knows ({e})") from e


def read_geojson(path: Path, names: list[str], class_property: str = "class") -> list[Click]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable GeoJSON file ({e})") from e
    crs = _geojson_crs(doc, path)
    features = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
    clicks: list[Click] = []
    for i, f in enumerate(features or []):
        props, geom = f.get("properties") or {}, f.get("geometry") or {}
        if class_property not in props:
            raise DataError(f"{path}: feature {i} has no {class_property!r} property (the class of the point)")
        cls = _class_index(props[class_property], names, path, f"feature {i}")
        if {"image", "row", "col"} <= set(props) and geom.get("type") is None:
            clicks.append(Click(len(clicks), cls, image=str(props["image"]), row=float(props["row"]),
                                col=float(props["col"])))
            continue
        if geom.get("type") == "Point":
            coords = [geom["coordinates"]]
        elif geom.get("type") == "MultiPoint":
            coords = geom["coordinates"]
        else:
            raise DataError(f"{path}: feature {i} is a {geom.get('type')!r}; only Point and MultiPoint are clicks")
        for xy in coords:
            clicks.append(Click(len(clicks), cls, x=float(xy[0]), y=float(xy[1]), crs=crs or "EPSG:4326"))
    if not clicks:
        raise DataError(f"{path}: holds no point")
    if crs is None:  # RFC 7946: lon/lat; projected metres here mean a file whose crs member was lost
        bad = [c for c in clicks if c.x is not None and not (-180 <= c.x <= 180 and -90 <= c.y <= 90)]
        if bad:
            raise DataError(f"{path}: has no crs member, so its coordinates must be longitude/latitude (EPSG:4326, "
                            f"RFC 7946), but ({bad[0].x}, {bad[0].y}) is not; add a crs member naming the CRS the "
                            f"points are in (e.g. the raster's), or reproject the file to EPSG:4326")
    return clicks


def read_csv(path: Path, names: list[str], crs: str | None = None) -> list[Click]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e})") from e
    if not rows:
        raise DataError(f"{path}: holds no point")
    cols = set(rows[0])
    pixel, mapped = {"image", "row", "col", "class"} <= cols, {"x", "y", "class"} <= cols
    if not (pixel or mapped):
        raise DataError(f"{path}: needs columns image,row,col,class (pixels) or x,y,class (map coordinates), "
                        f"found {sorted(cols)}")
    if mapped and not pixel and not crs:
        raise DataError(f"{path}: x,y columns need the CRS they are in: set points.crs (e.g. points.crs=EPSG:32640)")
    out = []
    for i, r in enumerate(rows):
        cls = _class_index(r["class"], names, path, f"row {i + 2}")
        try:
            if pixel:
                out.append(Click(i, cls, image=r["image"], row=float(r["row"]), col=float(r["col"])))
            else:
                out.append(Click(i, cls, x=float(r["x"]), y=float(r["y"]), crs=crs))
        except ValueError as e:
            raise DataError(f"{path}: row {i + 2}: not a number ({e})") from e
    return out


def read_clicks(path: str | Path, names: list[str], crs: str | None = None,
                class_property: str = "class") -> list[Click]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: points file not found")
    if p.suffix.lower() in (".geojson", ".json"):
        return read_geojson(p, names, class_property)
    if p.suffix.lower() == ".csv":
        return read_csv(p, names, crs)
    raise DataError(f"{p}: points must be a .geojson or a .csv file")


def place(clicks: list[Click], splits: dict[str, list], path: str | Path) -> tuple[dict[str, list[np.ndarray]],
                                                                                   list[dict], dict[str, int]]:
    """Put clicks on the scenes of each split: (sparse label maps per split at the working scale, one row per
    click with its status, counts per status). ``splits`` maps a split name to its scenes."""
    scenes = [(name, i, s) for name, ss in splits.items() for i, s in enumerate(ss)]
    headers = {}
    for name, i, s in scenes:
        with _open(s.image_path) as src:
            headers[(name, i)] = (src.crs, src.transform, src.height, src.width)
    located = _locate_pixel_clicks(clicks, scenes, headers, path)
    located.update(_locate_map_clicks([c for c in clicks if c.image is None], scenes, headers, path))
    maps = {name: [np.full(s.mask.shape, IGNORE_INDEX, np.int64) for s in ss] for name, ss in splits.items()}
    rows, counts = [], {}
    for c in clicks:
        row = _mark(c, located.get(c.index), splits, headers, maps)
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        rows.append(row)
    return maps, rows, counts


def _locate_pixel_clicks(clicks: list[Click], scenes: list, headers: dict, path) -> dict[int, tuple]:
    """Clicks that name their image: click index → (split, scene index, row, col) in full-resolution pixels. A
    click on an image the data set does not have, or outside its image, is an error."""
    by_name = {}
    for entry in scenes:
        by_name.setdefault(entry[2].name, entry)
        by_name.setdefault(Path(entry[2].name).name, entry)
    located = {}
    for c in clicks:
        if c.image is None:
            continue
        hit = by_name.get(c.image) or by_name.get(Path(c.image).name)
        if hit is None:
            raise DataError(f"{path}: click {c.index} names image {c.image!r}, which is not in the data set")
        h, w = headers[hit[:2]][2:]
        if not (0 <= c.row < h and 0 <= c.col < w):
            raise DataError(f"{path}: click {c.index} at row {c.row}, col {c.col} is outside {c.image} "
                            f"({w}×{h} px)")
        located[c.index] = (hit[0], hit[1], c.row, c.col)
    return located


def _locate_map_clicks(clicks: list[Click], scenes: list, headers: dict, path) -> dict[int, tuple]:
    """Clicks in map coordinates: each lands on the first georeferenced scene that holds it, reprojected once per
    (click CRS, scene CRS) pair; a click on no scene is left out (its status says "outside")."""
    if clicks and all(h[0] is None for h in headers.values()):
        raise DataError(f"{path}: its points are in map coordinates, but no image of the data set is georeferenced; "
                        "give pixel positions instead (CSV image,row,col,class)")
    located = {}
    for (name, i, _) in scenes:
        crs, tf, h, w = headers[(name, i)]
        todo = [c for c in clicks if c.index not in located]
        if not todo or crs is None:
            continue
        inv = ~tf
        for src_crs in {c.crs for c in todo}:
            group = [c for c in todo if c.crs == src_crs]
            xs, ys = reproject_points(CRS.from_user_input(src_crs), crs, [c.x for c in group], [c.y for c in group])
            for c, x, y in zip(group, xs, ys):
                col, row = inv * (x, y)
                if 0 <= row < h and 0 <= col < w:
                    located[c.index] = (name, i, row, col)
    return located


def _mark(c: Click, where: tuple | None, splits: dict, headers: dict, maps: dict) -> dict:
    """Write one located click into its scene's label map at the working scale, unless it falls on no-data or on
    a pixel already clicked; its row of the click table, with where it landed and its status."""
    status, r_w, c_w, image = "outside", None, None, c.image or ""
    if where is not None:
        name, i, row, col = where
        s = splits[name][i]
        h_full, w_full = headers[(name, i)][2:]
        r_w = min(int(math.floor(row * s.mask.shape[0] / h_full)), s.mask.shape[0] - 1)
        c_w = min(int(math.floor(col * s.mask.shape[1] / w_full)), s.mask.shape[1] - 1)
        image = s.name
        if s.valid is not None and not s.valid[r_w, c_w]:
            status = "nodata"
        elif maps[name][i][r_w, c_w] != IGNORE_INDEX:
            status = "duplicate"
        else:
            maps[name][i][r_w, c_w] = c.cls
            status = name
    return {"index": c.index, "image": image, "row": r_w, "col": c_w, "class": c.cls, "status": status}


def save_click_table(path: str | Path, rows: list[dict]) -> None:
    """The run's points.csv for clicks from a file: every input click, where it landed and whether it was used."""

    from .io import atomic_write_text

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=["index", "image", "row", "col", "class", "status"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_geojson(path: str | Path, points: np.ndarray, names: list[str], like: str | Path,
                  image_name: str | None = None) -> int:
    """Clicks of a sparse H×W label map as GeoJSON points at pixel centres, in the CRS of raster ``like`` (with a
    crs member); a raster without georeferencing gives pixel features (image, row, col). Returns the count."""
    with _open(like) as src:
        crs, tf, shape = src.crs, src.transform, (src.height, src.width)
    if shape != points.shape:
        raise DataError(f"{like}: is {shape[1]}×{shape[0]} px, the clicks' mask {points.shape[1]}×{points.shape[0]}")
    rows, cols = np.nonzero(points != IGNORE_INDEX)
    features = []
    for r, c in zip(rows.tolist(), cols.tolist()):
        props = {"class": names[int(points[r, c])], "row": r, "col": c, "image": image_name or Path(like).name}
        if crs is not None:
            x, y = tf * (c + 0.5, r + 0.5)
            geom = {"type": "Point", "coordinates": [x, y]}
        else:
            geom = None
        features.append({"type": "Feature", "geometry": geom, "properties": props})
    doc = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        doc["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
    return len(features)
