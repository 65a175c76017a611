"""A miniature OpenStreetView-5M: metadata CSV and zip shards of small JPEGs,
laid out as on the Hugging Face hub (served by tests/httpfixture.py's HubServer).

The layout follows the dataset card and the scripts that read it (osv5m/osv5m's
README ``data_files``: ``train.csv``/``test.csv`` and ``images/train``/``images/test``;
gastruc/osv5m ``scripts/download-dataset.py`` unzips ``images/<split>/NN.zip`` in
place, and readers then find the images one folder further down, e.g.
``images/test/00/<id>.jpg``): so each shard's images sit in a sub-folder named
after the shard, not at the zip's root. The CSV columns are those of the card's
header (id, ..., unique_city, ..., creator_username, creator_id).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

REPO = "datasets/osv5m/osv5m"  # the URL prefix of the dataset on the hub
CITIES = {  # unique_city -> number of images in the metadata
    "Tokyo_NaN_Tokyo_JP": 9,
    "Pittsburgh_NaN_Pennsylvania_US": 7,
    "Paris_NaN_Ile-de-France_FR": 6,
    "Portland_NaN_Maine_US": 2,
    "Portland_NaN_Oregon_US": 4,
}
COLUMNS = ["id", "latitude", "longitude", "thumb_original_url", "country", "city", "unique_region",
           "unique_sub-region", "unique_city", "unique_country", "creator_username", "creator_id"]


def jpeg(rng: np.random.Generator, size: int = 48, tint: int = 0) -> bytes:
    """A small JPEG: noise with a city-dependent tint, so a classifier has something to learn."""
    pixels = rng.integers(0, 120, (size, size, 3)).astype(np.uint8)
    pixels[..., tint % 3] += 120
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def build(n_shards: int = 2, seed: int = 0, size: int = 48, cities: dict[str, int] | None = None,
          missing: int = 1) -> tuple[dict[str, bytes], list[dict]]:
    """Path in the repo -> bytes of test.csv and images/test/NN.zip; and the metadata rows.
    The last ``missing`` ids of the first city are listed but in no shard."""
    rng = np.random.default_rng(seed)
    cities = cities or CITIES
    rows, image_id = [], 3_859_149_887_465_000
    for c, (unique_city, n) in enumerate(cities.items()):
        for _ in range(n):
            image_id += int(rng.integers(1, 1000))
            rows.append({"id": str(image_id), "latitude": "0.0", "longitude": "0.0", "thumb_original_url": "",
                         "country": unique_city.rsplit("_", 1)[1], "city": unique_city.split("_")[0],
                         "unique_region": "", "unique_sub-region": "", "unique_city": unique_city,
                         "unique_country": unique_city.rsplit("_", 1)[1], "creator_username": f"user{c}",
                         "creator_id": str(1000 + c), "_tint": c})
    csv = ",".join(COLUMNS) + "\n" + "".join(",".join(r[k] for k in COLUMNS) + "\n" for r in rows)
    files = {"test.csv": csv.encode()}
    first_city = [r for r in rows if r["unique_city"] == next(iter(cities))]
    absent = {r["id"] for r in first_city[len(first_city) - missing:]} if missing else set()
    shards = [io.BytesIO() for _ in range(n_shards)]
    zips = [zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) for b in shards]
    for k, r in enumerate(rows):
        if r["id"] not in absent:
            zips[k % n_shards].writestr(f"{k % n_shards:02d}/{r['id']}.jpg", jpeg(rng, size, r["_tint"]))
    for k, z in enumerate(zips):
        z.close()
        files[f"images/test/{k:02d}.zip"] = shards[k].getvalue()
    return files, rows
