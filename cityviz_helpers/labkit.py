"""The teacher's kit: one archive of a finished run's artifacts for every lab seat.

A course lab should not train 8 classifiers and a segmenter on every seat. The
teacher runs the series once (``make tutorial``), packs what it cached, hands the
archive out, and each seat installs it; the notebooks then load every step from
the cache (:mod:`cityviz_helpers.artifacts`) instead of computing it::

    make lab-pack                          # python -m cityviz_helpers.labkit pack
    make lab-unpack FILE=outputs/lab-pack-quick-synthetic-<hash>.tar.gz
    python -m cityviz_helpers.labkit verify FILE   # check only, install nothing

**The archive** is a gzip-compressed tar. Its first member, ``lab-pack-manifest.json``,
records the settings the archive was made with (profile, data, every settings
section, each section's settings hash and the hash of all of them), the code
(package version, the version numbers that enter artifact keys, a fingerprint of
the package's files and the git commit), and, per artifact folder, its step, its
key and the size and sha256 of every file. The other members are those files,
under their path relative to ``artifacts/<profile>/<dataset>/``.

**What is packed.** Of the folders under ``artifacts/<profile>/<dataset>/``: the
dataset whose key these settings compute; the models (``models/<arch>-s<seed>-<key>``)
whose keys these settings compute (:func:`cityviz_helpers.train.model_key`, for
every architecture and seed of ``train``), without their resume points
(``last.pt``, never read once a model is finished); the Grad-CAM maps of those
models; and every other complete step (CAM study, segmenter). Left out, and
listed: unfinished folders (``.partial``, models without ``model.json``), models
and datasets of other settings, maps of models of other settings, and anything
that is not a cityviz artifact.

**How "made with these settings" is checked (a choice).** An artifact's key is a
hash of the settings sections it reads plus, for later steps, the keys of what
they read (the dataset's fingerprint, the models' keys) and choices made in the
notebooks (CAM method, layer and split). The dataset's and the models' keys are
recomputed exactly at packing time, to choose what goes in. At unpacking time
only the dataset's key is recomputed (from the settings alone); the models' keys
would need the dataset scanned (every image opened) and the later steps' keys
the notebooks' choices, so recomputing them all is not practical there. Instead
unpacking compares the *inputs* of every key: profile, data, every settings
section (so ``CITYVIZ_OVERRIDES`` too), the key version numbers and the code
fingerprint must equal this checkout's. Equal inputs give equal keys, so every
artifact in a matching archive is one these settings and this code would
compute (and would load). A difference is refused, naming each setting that
differs and what to do; ``--allow-other-code`` accepts a different code
fingerprint (another commit) when the key version numbers still agree.

**What unpacking verifies, and how it installs.** Every member is checked
against the manifest (a plain file, a safe relative path, listed, its size and
sha256) and every listed file must be present, so a changed byte or a missing
file refuses the whole archive. Files are extracted into a temporary folder
``.labkit-unpack-<pid>`` inside the artifact folder, and each artifact folder is
renamed into place only when the whole archive has verified, one rename per
artifact, as :mod:`cityviz_helpers.artifacts` does: an interrupted or refused
unpack leaves no folder a later run would trust. Nothing is overwritten: an
artifact folder that already exists is kept as it is and reported. The manifest
itself is not signed: it protects against damage and mistakes, not against
someone who rewrites both a file and its checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .artifacts import MARKER
from .settings import REPO_ROOT, Settings, get_settings, in_clone, settings_hash

FORMAT = "cityviz-lab-pack"
FORMAT_VERSION = 1
MANIFEST = "lab-pack-manifest.json"
#: files of a finished model that are not packed: the resume point (optimizer state included)
SKIPPED_MODEL_FILES = ("last.pt",)
STAGING_PREFIX = ".labkit-unpack-"
_CHUNK = 1 << 20


class LabKitError(RuntimeError):
    """An archive that cannot be made or installed; the message says why and what to do."""


# --------------------------------------------------------------------------
# What the archive records
# --------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """As it reads back from the manifest (tuples become lists, ...)."""
    return json.loads(json.dumps(value, default=str))


def code_fingerprint() -> str:
    """sha256 over the package's own files (sources and data; caches excluded). The notebooks that ship
    with the package (``notebooks/``: a link to the repository's folder in a clone, copies in a wheel) are
    left out: they compute no artifact key, and a clone and a pip install of one commit must agree."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file()):
        rel = path.relative_to(package).as_posix()
        parts = rel.split("/")
        if "__pycache__" in parts or parts[0] == "notebooks" or rel.endswith((".pyc", ".pyo")):
            continue
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git_commit() -> str | None:
    if not in_clone():  # a pip install: site-packages is not a git checkout (or is someone else's)
        return None
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def code_record() -> dict:
    """The code an archive was made with: what enters artifact keys, and a fingerprint."""
    from . import __version__
    from .data import GENERATOR_VERSION
    from .train import CHECKPOINT_VERSION

    return {"package_version": __version__,
            "key_versions": {"data.GENERATOR_VERSION": GENERATOR_VERSION,
                             "train.CHECKPOINT_VERSION": CHECKPOINT_VERSION},
            "fingerprint": code_fingerprint(), "git_commit": _git_commit()}


def settings_record(settings: Settings) -> dict:
    """The settings an archive was made with, and the settings hash of each section."""
    names = list(settings.sections)
    return {"profile": settings.profile, "data": settings.data, "dataset_name": settings.dataset_name,
            "sections": _jsonable({n: settings[n] for n in names}),
            "section_hashes": {n: settings.hash(n) for n in names},
            "settings_hash": settings.hash(*names)}


def expected_dataset_key(settings: Settings) -> str | None:
    """The key :func:`cityviz_helpers.data.synthetic_artifact` gives the built-in
    cities under these settings (None for a real folder, which is not an artifact)."""
    if settings.data != "synthetic":
        return None
    from .data import GENERATOR_VERSION
    from .synthetic import DEFAULT_CITIES, cities_to_dict

    return settings.hash("dataset", extra={"step": "dataset", "version": GENERATOR_VERSION,
                                           "cities": cities_to_dict(DEFAULT_CITIES)})


def _differences(archive: Any, here: Any, where: str = "") -> list[str]:
    """Dotted names (``train.epochs``) whose values differ, with both values."""
    if isinstance(archive, dict) and isinstance(here, dict):
        out = []
        for key in sorted(set(archive) | set(here), key=str):
            name = f"{where}.{key}" if where else str(key)
            if key not in archive:
                out.append(f"{name}: not in the archive, here {json.dumps(here[key])}")
            elif key not in here:
                out.append(f"{name}: archive {json.dumps(archive[key])}, unknown here")
            else:
                out.extend(_differences(archive[key], here[key], name))
        return out
    if archive != here:
        return [f"{where}: archive {json.dumps(archive)}, here {json.dumps(here)}"]
    return []


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------


def _folder_key(name: str) -> str:
    return name.rsplit("-", 1)[-1]


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def select(settings: Settings, data=None) -> tuple[list[dict], list[dict], list[str]]:
    """The artifact folders of a finished run that belong in the archive.

    Returns ``(units, left_out, missing)``: units as ``{"path", "kind", "step",
    "key"}`` (path relative to the artifact folder), left-out folders with the
    reason, and the models these settings need that are not there. ``data`` is
    the run's dataset (:func:`cityviz_helpers.data.load_dataset`); it is loaded
    from the cache when not given, never drawn.
    """
    from .train import model_dir

    root = settings.artifacts_dir
    if not root.is_dir():
        raise LabKitError(f"{root} does not exist: there is no finished run to pack for profile "
                          f"{settings.profile!r} and data {settings.data!r}. Run `make tutorial` first "
                          "(with the same CITYVIZ_PROFILE and CITYVIZ_OVERRIDES), then `make lab-pack`.")
    units, left_out = [], []
    dataset_key = expected_dataset_key(settings)
    if dataset_key is not None:
        meta = _read_json(root / f"dataset-{dataset_key}" / MARKER)
        if not meta or meta.get("key") != dataset_key:
            raise LabKitError(f"{root} holds no complete dataset for these settings (dataset-{dataset_key}): "
                              "run `make tutorial` first (with the same CITYVIZ_PROFILE and CITYVIZ_OVERRIDES), "
                              "then `make lab-pack`.")
    if data is None:
        from .data import load_dataset
        data = load_dataset(settings, verbose=False)

    cfg = settings["train"]
    wanted_models = {model_dir(settings, data, a, s).name for a in cfg["archs"] for s in cfg["seeds"]}
    model_keys = {_folder_key(n) for n in wanted_models}
    found_models = set()

    for entry in sorted(root.iterdir()):
        rel = entry.name
        if entry.name.startswith("."):
            left_out.append({"path": rel, "reason": "a temporary folder of an unfinished or interrupted step"})
        elif entry.name == "models" and entry.is_dir():
            for folder in sorted(entry.iterdir()):
                rel = f"models/{folder.name}"
                meta = _read_json(folder / "model.json")
                if folder.name.startswith(".") or not folder.is_dir():
                    left_out.append({"path": rel, "reason": "not a model folder"})
                elif meta is None or not (folder / "weights.pt").is_file():
                    left_out.append({"path": rel, "reason": "an unfinished model (no model.json or weights.pt)"})
                elif meta.get("key") != _folder_key(folder.name):
                    left_out.append({"path": rel, "reason": "model.json's key differs from the folder's name"})
                elif folder.name not in wanted_models:
                    left_out.append({"path": rel, "reason": "a model of other settings (or of an architecture "
                                     "or seed these settings do not train)"})
                else:
                    found_models.add(folder.name)
                    units.append({"path": rel, "kind": "model", "step": "model", "key": meta["key"]})
        elif not entry.is_dir() or not (entry / MARKER).is_file():
            left_out.append({"path": rel, "reason": f"not a cityviz artifact (no {MARKER})"})
        else:
            meta = _read_json(entry / MARKER)
            step = (meta or {}).get("step")
            if meta is None or meta.get("key") != _folder_key(entry.name) or entry.name != f"{step}-{meta['key']}":
                left_out.append({"path": rel, "reason": f"{MARKER} does not match the folder's name"})
            elif step == "dataset" and meta["key"] != dataset_key:
                left_out.append({"path": rel, "reason": "a dataset of other settings"})
            elif "model_key" in meta and meta["model_key"] not in model_keys:
                left_out.append({"path": rel, "reason": "computed from a model of other settings"})
            else:
                diffs = _differences(meta.get("settings", {}),
                                     _jsonable({n: settings[n] for n in meta.get("settings", {}) if n in
                                                settings.sections}))
                if diffs:
                    left_out.append({"path": rel, "reason": "made with other settings (" + "; ".join(diffs[:3]) + ")"})
                else:
                    kind = "dataset" if step == "dataset" else "step"
                    units.append({"path": rel, "kind": kind, "step": step, "key": meta["key"]})
    missing = sorted(wanted_models - found_models)
    return units, left_out, missing


def _unit_files(root: Path, unit: dict) -> dict[str, dict]:
    folder = root / unit["path"]
    files = {}
    for path in sorted(p for p in folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise LabKitError(f"{path} is a symbolic link; a lab pack holds plain files only. Replace it by "
                              "the file it points to, or delete the artifact folder and run again.")
        if path.is_dir():
            continue
        if unit["kind"] == "model" and rel in SKIPPED_MODEL_FILES:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return files


def pack(settings: Settings | None = None, output_dir: str | os.PathLike | None = None,
         data=None, verbose: bool = True, compresslevel: int = 6) -> Path:
    """Write the archive of this run's artifacts; return its path.

    The archive goes to ``output_dir`` (default: the outputs root, ``outputs/``
    or ``CITYVIZ_OUTPUTS``) as ``lab-pack-<profile>-<dataset>-<hash>.tar.gz``,
    where the hash covers the settings, the code and every file's checksum: the
    same run packed twice gives the same name, and an existing archive is never
    overwritten.
    """
    settings = settings or get_settings()
    start = time.perf_counter()
    root = settings.artifacts_dir
    units, left_out, missing = select(settings, data)
    if not units:
        raise LabKitError(f"Nothing to pack under {root}: run `make tutorial` first.")
    for unit in units:
        unit["files"] = _unit_files(root, unit)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "settings": settings_record(settings), "code": code_record(),
                "artifacts": units, "left_out": left_out, "missing_models": missing}
    digest = settings_hash({k: manifest[k] for k in ("settings", "code", "artifacts")})
    out_dir = Path(output_dir) if output_dir is not None else settings.outputs_dir.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"lab-pack-{settings.profile}-{settings.dataset_name}-{digest}.tar.gz"
    if target.exists():
        if verbose:
            print(f"{target} already exists: it holds these settings and exactly these files (its name is a "
                  "hash of them), so it was left as it is.")
        write_checksum(target)
        return target
    partial = out_dir / f".{target.name}.partial-{os.getpid()}"
    manifest_bytes = json.dumps(manifest, indent=1).encode()
    n_files = sum(len(u["files"]) for u in units)
    try:
        with tarfile.open(partial, "w:gz", compresslevel=compresslevel, format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(manifest_bytes), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(manifest_bytes))
            for unit in units:
                for rel in unit["files"]:
                    path = root / unit["path"] / rel
                    info = tar.gettarinfo(str(path), arcname=f"{unit['path']}/{rel}")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    write_checksum(target)
    if verbose:
        size = target.stat().st_size / 1e6
        print(f"Packed {len(units)} artifact folders ({n_files} files) of profile {settings.profile!r}, data "
              f"{settings.data!r} (settings hash {manifest['settings']['settings_hash']}) into {target} "
              f"({size:.1f} MB, {time.perf_counter() - start:.0f} s).")
        for kind in ("dataset", "model", "step"):
            names = [u["path"] for u in units if u["kind"] == kind]
            if names:
                print(f"  {kind}: {len(names)}: " + ", ".join(names))
        for item in left_out:
            print(f"  left out {item['path']}: {item['reason']}")
        if missing:
            print(f"  WARNING: {len(missing)} model(s) of these settings are not finished and not packed "
                  f"({', '.join(missing)}); each seat would train them. Finish the run (`make tutorial`) "
                  "and pack again.")
        print(f"On each seat: make lab-unpack FILE={target} (with the same CITYVIZ_PROFILE and "
              "CITYVIZ_OVERRIDES as here). Or put the archive and its .sha256 file on a web server (or a "
              "Hugging Face dataset) and give its https:// address instead of the file: "
              "make lab-unpack FILE=https://..., or CITYVIZ_PACK=https://... before the notebooks' setup cell.")
    return target


# --------------------------------------------------------------------------
# An archive on a web server
# --------------------------------------------------------------------------


def write_checksum(archive: Path) -> Path:
    """``<archive>.sha256`` in ``sha256sum`` format, so a copy on a web server can be checked."""
    archive = Path(archive)
    side = archive.with_name(archive.name + ".sha256")
    if not side.exists():
        line = f"{_sha256(archive)}  {archive.name}\n"
        from .utils import atomic_write

        atomic_write(side, lambda tmp: Path(tmp).write_text(line))
    return side


def is_address(file: str | os.PathLike) -> bool:
    return str(file).lower().startswith(("https://", "http://"))


def _expected_sha256(url: str) -> tuple[str | None, str, object]:
    """What the archive at ``url`` must hash to, where that came from, and how to renew an expired
    address. In order: a ``#sha256=<hex>`` fragment (pip's convention for pinned downloads); for a
    file on the Hugging Face Hub, the sha256 the Hub publishes (``X-Linked-Etag``); else the
    ``<address>.sha256`` file ``make lab-pack`` writes beside the archive, when the server has one.
    The per-file sha256 in the archive's manifest is checked in every case."""
    from . import download as dl

    base, _, fragment = url.partition("#")
    pinned = dict(urllib.parse.parse_qsl(fragment)).get("sha256")
    if pinned:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", pinned):
            raise LabKitError(f"The #sha256= part of {base} is not 64 hexadecimal digits.")
        return pinned.lower(), "the address's #sha256", None
    if urllib.parse.urlsplit(base).netloc.lower() in dl._hub_hosts() and "/resolve/" in base:
        target = dl.resolve_hub_file(base)
        return target.sha256, "the Hub's sha256 (X-Linked-Etag)", lambda: dl.resolve_hub_file(base).location
    try:
        with dl._request(base + ".sha256", timeout=30) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except dl.DownloadError as err:
        if err.status in (403, 404, 410):
            return None, "none beyond the manifest (no .sha256 file beside the archive)", None
        raise
    found = re.match(r"\s*([0-9a-fA-F]{64})\b", text)
    if not found:
        raise LabKitError(f"{base}.sha256 does not start with a sha256 ({text[:60]!r}); upload the .sha256 file "
                          "that `make lab-pack` wrote beside the archive.")
    return found.group(1).lower(), f"{dl._show(base)}.sha256", None


def pack_name(url: str) -> str:
    """The archive's file name, from the last part of its address (nothing is asked of the server)."""
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url.partition("#")[0]).path).name)
    if not name or not _safe_member_name(name):
        raise LabKitError(f"{url} does not end in a file name; give the address of the archive itself "
                          "(…/lab-pack-<profile>-<dataset>-<hash>.tar.gz).")
    return name


def fetch_pack(url: str, folder: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Download the archive at ``url`` (``https://``, or ``http://`` on a lab's own network) into
    ``folder`` (default ``<home>/downloads``) and return its path.

    Resumable: an interrupted transfer leaves ``<name>.part`` and the next call goes on from its
    last byte (HTTP ranges; a server without them starts over). Redirects are followed (a release
    asset or a Hub file is served from a CDN), and an expired signed address is renewed once.
    Verified: against the sha256 :func:`_expected_sha256` finds, before the file gets its name.
    Never overwriting: a finished archive of that name is reused (checked against the sha256 when
    one is known; a different file of that name is an error, and is left where it is).
    """
    from . import download as dl
    from .settings import home

    base = url.partition("#")[0]
    name = pack_name(url)
    folder = Path(folder) if folder is not None else home() / "downloads"
    dest = folder / name
    try:
        sha, source, renew = _expected_sha256(url)
        if dest.exists():
            if sha and _sha256(dest) != sha:
                raise LabKitError(f"{dest} exists but is not the archive at {dl._show(base)} (its sha256 differs "
                                  f"from {source}). It was left as it is; move it away and rerun.")
            if verbose:
                print(f"{dest} is already here" + (" (sha256 checked)." if sha else "."))
            return dest
        if verbose:
            print(f"Fetching {dl._show(base)} into {folder} (verified by {source}).")
        dl.fetch_file(base, dest, sha256=sha, resolve=renew, label=name, show_progress=verbose)
    except dl.DownloadError as err:
        raise LabKitError(f"Could not fetch the lab pack: {err}") from None
    return dest


def _installed_marker(settings: Settings, archive: Path) -> Path:
    """A note, beside (not inside) the artifact folder, that ``archive`` was installed there."""
    return settings.artifacts_dir.with_name(f".{settings.dataset_name}.installed-{archive.name}.json")


def ensure_pack(source: str | os.PathLike, settings: Settings | None = None, verbose: bool = True) -> dict | None:
    """Install the teacher's archive (a file or an address) unless it was installed here before: the
    one call behind ``CITYVIZ_PACK`` in each notebook's setup cell. Returns :func:`unpack`'s result,
    or None when it had been installed already."""
    settings = settings or get_settings()
    name = pack_name(str(source)) if is_address(source) else Path(source).name
    if _installed_marker(settings, Path(name)).exists():  # every later notebook: no file, no server asked
        if verbose:
            print(f"Lab pack {name} is installed (from an earlier run); the notebooks load its steps.")
        return None
    return unpack(source, settings, verbose=verbose)


# --------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------


def check_manifest(manifest: dict, settings: Settings, allow_other_code: bool = False) -> None:
    """Refuse a manifest that was not made with these settings and this code."""
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise LabKitError(f"This is not a cityviz lab pack of format {FORMAT_VERSION} (it says "
                          f"{manifest.get('format')!r}, version {manifest.get('format_version')!r}); make it "
                          "again with `make lab-pack` from this version of the repository.")
    rec, here = manifest.get("settings", {}), settings_record(settings)
    problems = []
    for name in ("profile", "data"):
        if rec.get(name) != here[name]:
            problems.append(f"{name}: archive {rec.get(name)!r}, here {here[name]!r}")
    problems += _differences(rec.get("sections"), here["sections"])
    if not problems and rec.get("settings_hash") != here["settings_hash"]:
        problems.append(f"settings hash: archive {rec.get('settings_hash')}, here {here['settings_hash']}")
    code, here_code = manifest.get("code", {}), code_record()
    code_problems = [f"{d}" for d in _differences(code.get("key_versions"), here_code["key_versions"],
                                                  "key version")]
    if code.get("package_version") != here_code["package_version"]:
        code_problems.append(f"package version: archive {code.get('package_version')}, "
                             f"here {here_code['package_version']}")
    other_code = code.get("fingerprint") != here_code["fingerprint"]
    if problems:
        overrides = os.environ.get("CITYVIZ_OVERRIDES", "").strip() or "(not set)"
        raise LabKitError(
            "Refused: this archive was made with other settings, so its artifacts would not be the ones these "
            "settings load. Differences:\n  " + "\n  ".join(problems) +
            f"\nHere CITYVIZ_PROFILE={settings.profile}, CITYVIZ_OVERRIDES={overrides}. Unpack with the "
            "settings the teacher used (the same CITYVIZ_PROFILE, CITYVIZ_DATA and CITYVIZ_OVERRIDES; "
            "`python -m cityviz_helpers.labkit verify FILE` prints the archive's), or ask for an archive made "
            "with these settings. Nothing was installed.")
    if code_problems or (other_code and not allow_other_code):
        commit = code.get("git_commit") or "unknown"
        raise LabKitError(
            "Refused: this archive was made by other cityviz code, so the keys it holds may not be the ones "
            "this code computes. " + ("Differences: " + "; ".join(code_problems) + ". " if code_problems else
                                      "The package's files differ (code fingerprint). ") +
            f"The archive was made at git commit {commit} (here {here_code['git_commit'] or 'unknown'}). "
            "Check out the teacher's commit, or ask for an archive made from this one"
            + ("; or pass --allow-other-code to install it anyway (artifacts whose keys this code computes "
               "differently are then simply recomputed)" if not code_problems else "")
            + ". Nothing was installed.")
    key = expected_dataset_key(settings)
    datasets = [u for u in manifest.get("artifacts", []) if u.get("kind") == "dataset"]
    for unit in datasets:
        if unit.get("key") != key:
            raise LabKitError(f"Refused: the archive's dataset has key {unit.get('key')}, but these settings "
                              f"compute {key}; the manifest is inconsistent (edited?). Ask for a fresh archive. "
                              "Nothing was installed.")


def _process_gone(pid: str) -> bool:
    """Whether the unpack that made a staging folder has ended (a running one keeps its folder)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError, OSError):
        return False
    return False


def _safe_member_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name and \
        not any(part in ("", ".") for part in name.split("/"))


def _open(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise LabKitError(f"{path} does not exist or is not a file; give the archive `make lab-pack` wrote, "
                          "e.g. FILE=outputs/lab-pack-quick-synthetic-<hash>.tar.gz.")
    try:
        return tarfile.open(path, "r|gz")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise LabKitError(f"{path} is not a readable .tar.gz lab pack ({err}); copy it again from the "
                          "teacher.") from None


def _read_manifest(tar: tarfile.TarFile, path: Path) -> dict:
    try:
        first = tar.next()
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise LabKitError(f"{path} is damaged ({type(err).__name__}: {err}); copy it again. "
                          "Nothing was installed.") from None
    if first is None or first.name != MANIFEST or not first.isfile():
        raise LabKitError(f"{path} does not start with {MANIFEST}: it is not a cityviz lab pack "
                          "(make one with `make lab-pack`).")
    try:
        manifest = json.loads(tar.extractfile(first).read())
    except (ValueError, tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise LabKitError(f"{MANIFEST} in {path} cannot be read ({err}); copy the archive again.") from None
    if not isinstance(manifest, dict):
        raise LabKitError(f"{MANIFEST} in {path} is not a manifest; copy the archive again.")
    return manifest


def unpack(file: str | os.PathLike, settings: Settings | None = None, *, install: bool = True,
           allow_other_code: bool = False, verbose: bool = True) -> dict:
    """Verify an archive and (``install=True``) install it into this run's artifact folder.

    Returns ``{"installed": [...], "kept": [...], "files": n, "seconds": s}``.
    Raises :class:`LabKitError` when the archive is damaged, changed or made
    with other settings or code; nothing is installed then.
    """
    settings = settings or get_settings()
    start = time.perf_counter()
    path = fetch_pack(str(file), verbose=verbose) if is_address(file) else Path(file).expanduser()
    root = settings.artifacts_dir
    tar = _open(path)
    staging = None
    try:
        manifest = _read_manifest(tar, path)
        if verbose:
            rec = manifest.get("settings", {})
            print(f"{path.name}: made {manifest.get('created')} with profile {rec.get('profile')!r}, data "
                  f"{rec.get('data')!r}, settings hash {rec.get('settings_hash')}, code at git commit "
                  f"{(manifest.get('code') or {}).get('git_commit')}.")
        check_manifest(manifest, settings, allow_other_code)
        units = manifest.get("artifacts", [])
        expected: dict[str, tuple[dict, str, dict]] = {}
        for unit in units:
            if not _safe_member_name(unit.get("path", "")):
                raise LabKitError(f"The manifest names an unsafe folder {unit.get('path')!r}; refused.")
            for rel, entry in unit.get("files", {}).items():
                expected[f"{unit['path']}/{rel}"] = (unit, rel, entry)
        kept = [u["path"] for u in units if (root / u["path"]).exists() or (root / u["path"]).is_symlink()] \
            if install else []
        if install:
            root.mkdir(parents=True, exist_ok=True)
            for leftover in root.glob(f"{STAGING_PREFIX}*"):  # interrupted unpacks whose process is gone
                if _process_gone(leftover.name[len(STAGING_PREFIX):]):
                    shutil.rmtree(leftover, ignore_errors=True)
            staging = root / f"{STAGING_PREFIX}{os.getpid()}"
            staging.mkdir()
        seen = set()
        damaged = f"{path} is damaged or was changed after packing"
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, OSError, EOFError, ValueError) as err:
                raise LabKitError(f"{damaged} ({type(err).__name__}: {err}). Copy it again from the teacher "
                                  "(or make it again with `make lab-pack`). Nothing was installed.") from None
            if member is None:
                break
            name = member.name
            if name not in expected or not member.isfile() or not _safe_member_name(name):
                raise LabKitError(f"{damaged}: it holds {name!r}, which the manifest does not list as a plain "
                                  "file. Nothing was installed.")
            if name in seen:
                raise LabKitError(f"{damaged}: {name!r} appears twice. Nothing was installed.")
            seen.add(name)
            unit, rel, entry = expected[name]
            write = install and unit["path"] not in kept
            digest, size = hashlib.sha256(), 0
            dest = staging / name if write else None
            if dest is not None:
                dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                source = tar.extractfile(member)
                with (open(dest, "wb") if dest is not None else open(os.devnull, "wb")) as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                raise LabKitError(f"{damaged} ({type(err).__name__} while reading {name}: {err}). Copy it "
                                  "again. Nothing was installed.") from None
            if size != entry.get("size") or digest.hexdigest() != entry.get("sha256"):
                raise LabKitError(f"{damaged}: {name} has sha256 {digest.hexdigest()[:16]}... and {size} bytes, "
                                  f"the manifest says {str(entry.get('sha256'))[:16]}... and {entry.get('size')} "
                                  "bytes. Copy the archive again from the teacher (or make it again with "
                                  "`make lab-pack`). Nothing was installed.")
        absent = sorted(set(expected) - seen)
        if absent:
            raise LabKitError(f"{damaged}: {len(absent)} file(s) the manifest lists are missing (first: "
                              f"{absent[0]}). Copy it again. Nothing was installed.")
        installed = []
        if install:
            for unit in units:  # every file verified: now each folder goes into place in one rename
                if unit["path"] in kept:
                    continue
                src, dst = staging / unit["path"], root / unit["path"]
                marker = src / ("model.json" if unit["kind"] == "model" else MARKER)
                meta = _read_json(marker)
                if meta is None or meta.get("key") != unit["key"] or _folder_key(unit["path"]) != unit["key"]:
                    raise LabKitError(f"The archive's {unit['path']} has no marker with its key {unit['key']}; "
                                      "refused (ask for a fresh archive).")
                if not src.is_dir():  # a folder without files (cannot happen for a marked artifact)
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.exists() or dst.is_symlink():  # appeared meanwhile: keep it
                    kept.append(unit["path"])
                    continue
                os.rename(src, dst)
                installed.append(unit["path"])
    finally:
        tar.close()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if install:
        marker = _installed_marker(settings, path)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"archive": str(path), "installed": installed, "kept": kept}, indent=1))
    seconds = time.perf_counter() - start
    result = {"installed": installed, "kept": kept, "files": len(expected), "seconds": seconds}
    if verbose:
        print(f"Verified {len(expected)} files of {len(units)} artifact folders (every sha256, the settings, "
              f"the code) in {seconds:.0f} s.")
        if install:
            print(f"Installed {len(installed)} artifact folders into {root}.")
            for name in kept:
                print(f"  kept {name}: it already exists here, so it was left as it is (not compared).")
            print("The notebooks now load these steps from the cache (`make tutorial`, or open them in "
                  "`make lab`).")
        else:
            print("Nothing installed (verify only).")
    return result


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cityviz_helpers.labkit",
        description="The teacher's kit: pack a finished run's artifacts into one archive, verify it, install it. "
                    "Settings come from CITYVIZ_PROFILE, CITYVIZ_DATA and CITYVIZ_OVERRIDES, as for the notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write outputs/lab-pack-<profile>-<dataset>-<hash>.tar.gz")
    p.add_argument("--output", help="folder for the archive (default: outputs/, or CITYVIZ_OUTPUTS)")
    for name, text in (("unpack", "verify an archive and install it into artifacts/, overwriting nothing"),
                       ("verify", "verify an archive against these settings; install nothing")):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", help="the archive `pack` wrote: a file, or its https:// address on a web server "
                                    "or the Hugging Face Hub (fetched into <home>/downloads, resumable)")
        p.add_argument("--allow-other-code", action="store_true",
                       help="accept an archive made by other cityviz code (another commit) when the version "
                            "numbers in artifact keys agree")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "pack":
            pack(output_dir=args.output)
        else:
            unpack(args.file, install=args.command == "unpack", allow_other_code=args.allow_other_code)
    except LabKitError as err:
        print(f"lab-{args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
