"""The teacher's kit (issue 18, item 6): pack a run's artifacts, verify, install.

A small run is built in tmp_path (CITYVIZ_ARTIFACTS, CITYVIZ_OUTPUTS, see
conftest.py) with the real functions: the built-in cities drawn at 32 px with a
handful of images, model folders where :func:`train.model_dir` puts them (a
model.json and small weights: nothing is trained), and later steps written by
:func:`artifacts.artifact`.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cityviz_helpers import labkit, train
from cityviz_helpers.artifacts import artifact
from cityviz_helpers.data import load_dataset
from cityviz_helpers.settings import get_settings

TINY = {"dataset": {"n_per_city": {"train": 2, "val": 1, "test": 1}, "image_size": 32},
        "train": {"archs": ["simple"], "seeds": [0, 1]}}
OTHER = {**TINY, "train": {**TINY["train"], "epochs": 1}}


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    monkeypatch.delenv("CITYVIZ_OVERRIDES", raising=False)


def _model(settings, data, arch, seed) -> str:
    folder = train.model_dir(settings, data, arch, seed)
    folder.mkdir(parents=True)
    key = folder.name.rsplit("-", 1)[1]
    torch.save({"w": torch.arange(4.0) + seed}, folder / "weights.pt")
    torch.save({"resume": seed}, folder / "last.pt")
    (folder / "model.json").write_text(json.dumps({"arch": arch, "seed": seed, "key": key,
                                                   "settings": {"dataset": settings["dataset"],
                                                                "train": settings["train"]}}))
    return key


def _maps(settings, data, name, model_key):
    def build(folder: Path):
        np.savez_compressed(folder / "maps.npz", grids=np.full((2, 3, 3), float(len(name)), np.float32))
        (folder / "images.json").write_text(json.dumps({"paths": ["a.png", "b.png"]}))
        return {"model": name, "model_key": model_key, "n_images": 2}

    return artifact(settings, f"gradcam-{name}", (), build, version=2, verbose=False,
                    extra={"model_key": model_key, "data": data.fingerprint, "split": "test"})


def _segmenter_build(folder: Path):
    (folder / "weights.pt").write_bytes(b"segmenter weights")
    (folder / "segmenter.json").write_text("{}")


def make_run():
    """A finished tiny run; returns (settings, data, model keys, the teacher's files)."""
    s = get_settings("quick", "synthetic", overrides=TINY)
    data = load_dataset(s, verbose=False)
    keys = {seed: _model(s, data, "simple", seed) for seed in (0, 1)}
    for seed, key in keys.items():
        _maps(s, data, f"simple-s{seed}", key)
    artifact(s, "segmenter", (), _segmenter_build, verbose=False, extra={"data": data.fingerprint})
    # what must stay behind: a model and its maps of other settings, a step's leftover, a stray file
    other = get_settings("quick", "synthetic", overrides=OTHER)
    stale = _model(other, data, "simple", 0)
    _maps(other, data, "simple-s0", stale)
    (s.artifacts_dir / ".segmenter-0123456789ab.partial-1").mkdir()
    (s.artifacts_dir / "notes.txt").write_text("the teacher's own notes")
    return s, data, keys, stale


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expected_files(s, stale: str) -> dict[str, bytes]:
    """The teacher's files that a seat should receive."""
    keep = {}
    for rel, data in tree(s.artifacts_dir).items():
        if rel.endswith("/last.pt") or rel == "notes.txt" or rel.startswith("."):
            continue
        if stale in rel:  # the stale model and its maps (whose marker names it)
            continue
        if rel.startswith("gradcam-") and stale.encode() in (s.artifacts_dir / rel.split("/")[0] /
                                                             "_artifact.json").read_bytes():
            continue
        keep[rel] = data
    return keep


def read_manifest(archive: Path) -> dict:
    with tarfile.open(archive, "r:gz") as tar:
        first = tar.next()
        assert first.name == labkit.MANIFEST
        return json.loads(tar.extractfile(first).read())


def move_away(s) -> Path:
    """The seat starts with no artifacts: the teacher's folder moves aside."""
    teacher = s.artifacts_dir.parent.parent.parent / "teacher-artifacts"
    shutil.move(str(s.artifacts_dir), teacher)
    return teacher


def test_pack_unpack_round_trip_installs_exactly_the_current_run(tmp_path, capsys):
    s, data, keys, stale = make_run()
    want = expected_files(s, stale)
    assert any(r.startswith("dataset-") for r in want) and len(want) > 40

    archive = labkit.pack(s)
    assert archive.parent == tmp_path / "outputs" and archive.name.startswith("lab-pack-quick-synthetic-")
    assert archive.name.endswith(".tar.gz") and not list(archive.parent.glob(".*partial*"))
    out = capsys.readouterr().out
    assert "left out models/simple-s0-" + stale in out and ".segmenter-0123456789ab.partial-1" in out

    manifest = read_manifest(archive)
    packed = {f"{u['path']}/{rel}": e for u in manifest["artifacts"] for rel, e in u["files"].items()}
    assert set(packed) == set(want)  # no resume points, no stale model or maps, no leftovers
    for rel, entry in packed.items():
        assert entry == {"size": len(want[rel]), "sha256": hashlib.sha256(want[rel]).hexdigest()}
    rec = manifest["settings"]
    assert rec["settings_hash"] == s.hash(*s.sections) and rec["section_hashes"]["train"] == s.hash("train")
    assert rec["sections"]["dataset"]["image_size"] == 32
    kinds = {u["path"]: (u["kind"], u["key"]) for u in manifest["artifacts"]}
    assert kinds[f"dataset-{labkit.expected_dataset_key(s)}"][0] == "dataset"
    assert {p for p, (k, _) in kinds.items() if k == "model"} == {
        f"models/simple-s{seed}-{key}" for seed, key in keys.items()}
    assert manifest["missing_models"] == []
    left = {x["path"] for x in manifest["left_out"]}
    assert {f"models/simple-s0-{stale}", "notes.txt", ".segmenter-0123456789ab.partial-1"} <= left

    # the same run packed again: the same name, the file left as it is
    mtime = archive.stat().st_mtime_ns
    assert labkit.pack(s, verbose=False) == archive and archive.stat().st_mtime_ns == mtime

    move_away(s)
    result = labkit.unpack(archive, s)
    assert result["kept"] == [] and len(result["installed"]) == len(manifest["artifacts"])
    assert tree(s.artifacts_dir) == want  # byte for byte, nothing else
    assert not list(s.artifacts_dir.glob(".labkit-unpack-*"))

    # a later run trusts what was installed: every step loads, nothing is computed
    def must_not_run(folder):
        raise AssertionError("an installed artifact was computed again")

    assert load_dataset(s, verbose=False).fingerprint == data.fingerprint
    for seed, key in keys.items():
        art = artifact(s, f"gradcam-simple-s{seed}", (), must_not_run, version=2, verbose=False,
                       extra={"model_key": key, "data": data.fingerprint, "split": "test"})
        assert art.loaded
        assert (train.model_dir(s, data, "simple", seed) / "model.json").is_file()
    assert artifact(s, "segmenter", (), must_not_run, verbose=False, extra={"data": data.fingerprint}).loaded


def _rewrite(archive: Path, dest: Path, change) -> Path:
    """A copy of the archive whose uncompressed tar bytes went through ``change``."""
    raw = bytearray(gzip.decompress(archive.read_bytes()))
    change(raw)
    dest.write_bytes(gzip.compress(bytes(raw)))
    return dest


def test_refuses_a_tampered_archive_and_installs_nothing(tmp_path, capsys, monkeypatch):
    s, _, keys, _ = make_run()
    archive = labkit.pack(s, verbose=False)
    move_away(s)
    with tarfile.open(archive, "r:gz") as tar:
        weights = next(m for m in tar.getmembers() if m.name.endswith(f"simple-s1-{keys[1]}/weights.pt"))

    def flip(raw):  # one byte of one model's weights
        raw[weights.offset_data + 10] ^= 0x01

    tampered = _rewrite(archive, tmp_path / "tampered.tar.gz", flip)
    with pytest.raises(labkit.LabKitError, match=r"damaged or was changed after packing: .*weights.pt has sha256"):
        labkit.unpack(tampered, s, verbose=False)
    assert not s.artifacts_dir.exists() or list(s.artifacts_dir.iterdir()) == []  # no folder, no staging

    # the command line (settings from the environment, as for the notebooks) says it and fails
    monkeypatch.setenv("CITYVIZ_OVERRIDES", json.dumps(TINY))
    assert labkit.main(["unpack", str(tampered)]) == 1
    err = capsys.readouterr().err
    assert "lab-unpack:" in err and "Copy the archive again" in err and "Nothing was installed" in err
    assert labkit.main(["verify", str(tampered)]) == 1

    # a truncated copy and a file that is not an archive are refused as well
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(labkit.LabKitError, match="damaged|missing"):
        labkit.unpack(truncated, s, verbose=False)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(labkit.LabKitError, match="not a readable|damaged|not start"):
        labkit.unpack(junk, s, verbose=False)

    # an extra file slipped in (not in the manifest) is refused
    def append(raw):  # every member, then one more file, then a fresh end of archive
        with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
            last = tar.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"models/simple-s0-{keys[0]}/extra.pt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        raw[:] = raw[:end] + bytearray(buf.getvalue())

    extra = _rewrite(archive, tmp_path / "extra.tar.gz", append)
    with pytest.raises(labkit.LabKitError, match="does not list"):
        labkit.unpack(extra, s, verbose=False)
    assert not s.artifacts_dir.exists() or tree(s.artifacts_dir) == {}

    assert labkit.main(["verify", str(archive)]) == 0  # the original is fine
    assert not s.artifacts_dir.exists() or tree(s.artifacts_dir) == {}  # verify installs nothing


def test_refuses_an_archive_made_with_other_settings_or_code(monkeypatch):
    s, *_ = make_run()
    archive = labkit.pack(s, verbose=False)
    move_away(s)

    other = get_settings("quick", "synthetic", overrides=OTHER)
    assert other.artifacts_dir == s.artifacts_dir  # the same folder: only the check stands between
    with pytest.raises(labkit.LabKitError) as err:
        labkit.unpack(archive, other, verbose=False)
    message = str(err.value)
    assert "made with other settings" in message and "train.epochs: archive" in message
    assert "CITYVIZ_OVERRIDES" in message and "Nothing was installed" in message
    assert not s.artifacts_dir.exists()

    full = get_settings("full", "synthetic", overrides=TINY)
    with pytest.raises(labkit.LabKitError, match="profile: archive 'quick', here 'full'"):
        labkit.unpack(archive, full, verbose=False)

    # other code: refused, unless asked to accept it; a changed key version is refused always
    monkeypatch.setattr(labkit, "code_fingerprint", lambda: "0" * 64)
    with pytest.raises(labkit.LabKitError, match="other cityviz code.*--allow-other-code"):
        labkit.unpack(archive, s, verbose=False)
    assert not s.artifacts_dir.exists()
    real_record = labkit.code_record

    def bumped():
        rec = real_record()
        rec["key_versions"]["train.CHECKPOINT_VERSION"] += 1
        return rec

    monkeypatch.setattr(labkit, "code_record", bumped)
    with pytest.raises(labkit.LabKitError, match="key version.train.CHECKPOINT_VERSION"):
        labkit.unpack(archive, s, verbose=False, allow_other_code=True)
    assert not s.artifacts_dir.exists()
    monkeypatch.setattr(labkit, "code_record", real_record)
    assert labkit.unpack(archive, s, verbose=False, allow_other_code=True)["installed"]


def test_unpack_overwrites_nothing_and_a_failed_install_leaves_only_complete_folders(monkeypatch):
    s, _, keys, stale = make_run()
    want = expected_files(s, stale)
    archive = labkit.pack(s, verbose=False)
    move_away(s)

    # a seat that already has one of the folders (here with other content): it is kept as it is
    mine = s.artifacts_dir / "models" / f"simple-s0-{keys[0]}"
    mine.mkdir(parents=True)
    (mine / "model.json").write_text("the seat's own file")
    result = labkit.unpack(archive, s, verbose=False)
    assert result["kept"] == [f"models/simple-s0-{keys[0]}"]
    assert tree(mine) == {"model.json": b"the seat's own file"}
    assert {k: v for k, v in tree(s.artifacts_dir).items() if not k.startswith(f"models/simple-s0-{keys[0]}")} \
        == {k: v for k, v in want.items() if not k.startswith(f"models/simple-s0-{keys[0]}")}

    # unpacking again changes nothing: every folder is kept
    before = tree(s.artifacts_dir)
    again = labkit.unpack(archive, s, verbose=False)
    assert again["installed"] == [] and len(again["kept"]) == len(result["installed"]) + 1
    assert tree(s.artifacts_dir) == before

    # a failure half-way through installing: what went in is complete, nothing else is there
    shutil.rmtree(s.artifacts_dir)
    real_rename, calls = os.rename, []

    def failing_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(labkit.os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space left"):
        labkit.unpack(archive, s, verbose=False)
    monkeypatch.setattr(labkit.os, "rename", real_rename)
    got = tree(s.artifacts_dir)
    first = Path(calls[0]).relative_to(s.artifacts_dir).as_posix()
    assert got == {k: v for k, v in want.items() if k.startswith(first + "/")} and got
    assert [p.name for p in s.artifacts_dir.iterdir() if p.name.startswith(".")] == []
    # and a rerun completes the install, keeping the folder that went in
    rerun = labkit.unpack(archive, s, verbose=False)
    assert rerun["kept"] == [first] and tree(s.artifacts_dir) == want


def test_pack_refuses_without_a_finished_run():
    s = get_settings("quick", "synthetic", overrides=TINY)
    with pytest.raises(labkit.LabKitError, match="make tutorial"):
        labkit.pack(s, verbose=False)
    s.artifacts_dir.mkdir(parents=True)
    with pytest.raises(labkit.LabKitError, match="no complete dataset for these settings"):
        labkit.pack(s, verbose=False)
    assert list(s.artifacts_dir.iterdir()) == []  # nothing was drawn or written


def test_expected_dataset_key_is_the_key_the_dataset_step_computes():
    s = get_settings("quick", "synthetic", overrides=TINY)
    from cityviz_helpers.data import synthetic_artifact

    assert synthetic_artifact(s, verbose=False).key == labkit.expected_dataset_key(s)


# --------------------------------------------------------------------------
# The archive on a web server (a static host, or a Hugging Face dataset)
# --------------------------------------------------------------------------


def test_unpack_from_a_static_host_resumes_follows_redirects_and_verifies(tmp_path, monkeypatch, capsys):
    from httpfixture import FileServer

    s, _, _, stale = make_run()
    want = expected_files(s, stale)
    archive = labkit.pack(s, verbose=False)
    side = archive.with_name(archive.name + ".sha256")
    assert side.read_text() == f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n"
    move_away(s)
    monkeypatch.setenv("CITYVIZ_HOME", str(tmp_path / "seat"))
    body = archive.read_bytes()
    files = {f"/store/{archive.name}": body, f"/store/{archive.name}.sha256": side.read_bytes()}
    with FileServer(files) as server:
        # the teacher's address redirects to storage, as a release asset does; the transfer drops halfway
        server.redirects = {f"/release/{archive.name}": f"/store/{archive.name}",
                            f"/release/{archive.name}.sha256": f"/store/{archive.name}.sha256"}
        server.drop[f"/store/{archive.name}"] = len(body) // 2
        url = f"{server.url}/release/{archive.name}"
        result = labkit.ensure_pack(url, s)
        ranges = [rng for path, rng in server.log if path == f"/store/{archive.name}"]
        assert ranges[0] is None and ranges[1] == f"bytes={len(body) // 2}-"  # resumed, not started over
        assert tree(s.artifacts_dir) == want and len(result["installed"]) > 3
        fetched = tmp_path / "seat" / "downloads" / archive.name
        assert fetched.read_bytes() == body and not list(fetched.parent.glob("*.part"))
        assert "verified by" in capsys.readouterr().out

        # a second call (the next notebook's setup cell) installs nothing and transfers nothing
        n_requests = len(server.log)
        assert labkit.ensure_pack(url, s, verbose=False) is None
        assert all(path.endswith(".sha256") for path, _ in server.log[n_requests:])


def test_a_damaged_transfer_or_a_different_file_installs_nothing(tmp_path, monkeypatch):
    from httpfixture import FileServer

    s, _, _, _ = make_run()
    archive = labkit.pack(s, verbose=False)
    move_away(s)
    monkeypatch.setenv("CITYVIZ_HOME", str(tmp_path / "seat"))
    body = bytearray(archive.read_bytes())
    body[len(body) // 3] ^= 0xFF  # a flipped byte in transit
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with FileServer({f"/{archive.name}": bytes(body), f"/{archive.name}.sha256": f"{sha}  x\n".encode()}) as server:
        with pytest.raises(labkit.LabKitError, match="Checksum mismatch"):
            labkit.unpack(f"{server.url}/{archive.name}", s)
        assert not s.artifacts_dir.exists()
        downloads = tmp_path / "seat" / "downloads"
        assert not (downloads / archive.name).exists() and (downloads / f"{archive.name}.part.bad").exists()
        # a file of that name that is not this archive is left alone, and said so
        (downloads / archive.name).write_bytes(b"the student's own file")
        with pytest.raises(labkit.LabKitError, match="left as it is"):
            labkit.unpack(f"{server.url}/{archive.name}#sha256={sha}", s)
        assert (downloads / archive.name).read_bytes() == b"the student's own file"
    with pytest.raises(labkit.LabKitError, match="file name"):
        labkit.fetch_pack("https://example.org/")


def test_unpack_from_a_hugging_face_dataset_uses_the_hubs_sha256(tmp_path, monkeypatch):
    from httpfixture import HubServer

    from cityviz_helpers import download as dl

    s, _, _, stale = make_run()
    want = expected_files(s, stale)
    archive = labkit.pack(s, verbose=False)
    move_away(s)
    monkeypatch.setenv("CITYVIZ_HOME", str(tmp_path / "seat"))
    repo = "datasets/a-teacher/cityviz-lab"
    with HubServer({repo: {archive.name: archive.read_bytes()}}) as hub:
        monkeypatch.setattr(dl, "HF_ENDPOINT", hub.url)
        labkit.unpack(f"{hub.url}/{repo}/resolve/main/{archive.name}", s)
        assert [host for host, _, _ in hub.log].count("cdn") == 1  # stored file: the bytes come from the CDN
    assert tree(s.artifacts_dir) == want


def test_the_setup_cell_loads_a_teachers_pack_once_and_says_how_to_get_a_gpu(tmp_path, monkeypatch, capsys):
    import cityviz_helpers as cv

    s, _, _, stale = make_run()
    want = expected_files(s, stale)
    archive = labkit.pack(s, verbose=False)
    move_away(s)
    monkeypatch.setenv("CITYVIZ_OVERRIDES", json.dumps(TINY))  # the teacher's settings, as the notebooks get them
    monkeypatch.setenv("CITYVIZ_PACK", str(archive))
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20261201")  # what a Colab runtime sets
    monkeypatch.setattr(train, "pick_device", lambda preference="auto": torch.device("cpu"))
    assert cv.setup() == cv.home()
    out = capsys.readouterr().out
    assert "No GPU in this colab session" in out and "Change runtime type" in out
    assert tree(s.artifacts_dir) == want
    cv.setup()
    assert "is installed (from an earlier run)" in capsys.readouterr().out
