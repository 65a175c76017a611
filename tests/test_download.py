"""data_download.sh's downloader against a loopback server: no internet needed."""

from __future__ import annotations

import errno
import io
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cityviz_helpers import download as dl
from cityviz_helpers.data import scan_image_folder

from httpfixture import FileServer, HubServer
import osv5m_fixture as fx

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARDS = {"test": 2}


@pytest.fixture
def osv():
    files, rows = fx.build()
    with HubServer({fx.REPO: files}) as server:
        server.rows = rows
        server.files = server.repos[fx.REPO]
        yield server


def fetch(server, out, **kwargs):
    kwargs.setdefault("cities", ["Tokyo", "Pittsburgh"])
    kwargs.setdefault("per_city", 4)
    return dl.fetch_osv5m(out, endpoint=server.url, shards=SHARDS, **kwargs)


def test_fetches_only_the_chosen_cities_and_members(osv, tmp_path, monkeypatch):
    # the fixture's shards are tiny, so shrink the read-ahead to keep the real ratio (64 KiB vs GB shards)
    monkeypatch.setattr(dl, "BLOCK", 512)
    out = tmp_path / "osv5m"
    report = fetch(osv, out)
    assert report.written == {"Tokyo": 4, "Pittsburgh": 4}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["ATTRIBUTION.csv", "Pittsburgh", "Tokyo"]
    manifest = pd.read_csv(out / dl.MANIFEST, dtype=str)
    assert len(manifest) == 8 and set(manifest.licence) == {"CC-BY-SA-4.0"}
    by_id = {r["id"]: r for r in osv.rows}
    for row in manifest.itertuples():
        assert (out / row.file).exists()
        assert row.creator_username == by_id[row.id]["creator_username"]  # attribution matches the metadata
        assert by_id[row.id]["unique_city"].startswith(row.city)
    # only the needed members travelled: far less than the shards themselves
    shard_paths = [p for p in osv.files if p.endswith(".zip")]
    sent = sum(osv.sent.get(p, 0) for p in shard_paths)
    assert sent < 0.6 * sum(len(osv.files[p]) for p in shard_paths)
    assert all(rng is not None for path, rng in osv.requests("cdn") if path.endswith(".zip"))
    # what was verified is said: the CSV against the Hub's sha256, the images against their zip CRC
    assert report.checks["test.csv"] == "sha256 from the Hub (X-Linked-Etag)"
    assert "CRC-32" in report.checks["images/test/00.zip"]
    # and the result is a tree the notebooks read
    data = scan_image_folder(out, min_side=16, verbose=False)
    assert data.cities == ["Pittsburgh", "Tokyo"] and len(data.items) == 8


def test_rerun_keeps_finished_images_and_adds_more(osv, tmp_path):
    out = tmp_path / "osv5m"
    fetch(osv, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    again = fetch(osv, out)
    assert again.written == {"Tokyo": 0, "Pittsburgh": 0} and again.kept == 8
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == before
    more = fetch(osv, out, per_city=10)
    # Tokyo lists 9 images of which one is in no shard; Pittsburgh has 7
    assert more.written == {"Tokyo": 4, "Pittsburgh": 3} and more.missing == 1
    assert len(pd.read_csv(out / dl.MANIFEST)) == 15


def test_ambiguous_and_unknown_city_names(osv, tmp_path):
    report = fetch(osv, tmp_path / "a", cities=["Portland"], per_city=3)
    assert report.written == {"Portland": 3}  # the Portland with most images (Oregon, 4)
    assert any("Portland_NaN_Oregon_US" in n and "Portland_NaN_Maine_US" in n for n in report.notes)
    with pytest.raises(dl.DownloadError, match="No city called 'Atlantis'.*--list-cities"):
        fetch(osv, tmp_path / "b", cities=["Atlantis"])
    table = dl.city_counts(dl.load_osv5m_metadata(tmp_path / "b", ["test"], osv.url))
    assert table.unique_city.iloc[0] == "Tokyo_NaN_Tokyo_JP" and table.images.iloc[0] == 9


DL_FETCH_FILE = dl.fetch_file  # the real one, for a test that wraps it


def hub_csv(osv, dest, **kwargs):
    return dl.fetch_hub_file(dl.OSV5M_REPO, "test.csv", dest, repo_type="dataset", endpoint=osv.url,
                             show_progress=False, **kwargs)


def test_metadata_transfer_dropped_midway_resumes(osv, tmp_path):
    size = len(osv.files["test.csv"])
    osv.drop["test.csv"] = size // 2
    dest, check = hub_csv(osv, tmp_path / "test.csv")
    assert dest.read_bytes() == osv.files["test.csv"] and check.startswith("sha256")
    ranges = [rng for p, rng in osv.requests("cdn", "test.csv")]
    assert ranges == [None, f"bytes={size // 2}-"]  # the second request picked up where the first stopped


def test_interrupted_run_resumes_on_rerun(osv, tmp_path, monkeypatch):
    osv.drop["test.csv"] = 100
    monkeypatch.setattr(dl, "fetch_file", lambda *a, **k: DL_FETCH_FILE(*a, **{**k, "retries": 0}))
    with pytest.raises(dl.DownloadError, match="dropped 1 times.*Rerun the same command"):
        hub_csv(osv, tmp_path / "test.csv")
    assert not (tmp_path / "test.csv").exists()  # nothing half-written under the real name
    assert (tmp_path / "test.csv.part").stat().st_size == 100
    hub_csv(osv, tmp_path / "test.csv")
    assert (tmp_path / "test.csv").read_bytes() == osv.files["test.csv"]
    assert not (tmp_path / "test.csv.part").exists()
    assert osv.requests("cdn", "test.csv")[-1] == (f"{fx.REPO}/resolve-cache/test.csv", "bytes=100-")


def test_shard_member_transfer_dropped_midway_is_retried(osv, tmp_path):
    shard = "images/test/00.zip"
    osv.drop[shard] = 10  # the first ranged read of the shard longer than 10 bytes is cut after 10
    report = fetch(osv, tmp_path / "osv5m")
    assert report.written == {"Tokyo": 4, "Pittsburgh": 4}
    assert shard not in osv.drop  # the cut happened, and the read was retried


def test_refuses_a_folder_it_did_not_create(osv, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(dl.DownloadError, match="Refusing to write into .*did not create"):
        fetch(osv, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"


def test_never_overwrites_a_file_it_did_not_write(osv, tmp_path):
    out = tmp_path / "osv5m"
    fetch(osv, out, per_city=1)
    tokyo = [r["id"] for r in osv.rows if r["unique_city"].startswith("Tokyo")]
    mine = out / "Tokyo" / f"{tokyo[3]}.jpg"  # a file a user put where a later image would go
    mine.write_bytes(b"user data")
    report = fetch(osv, out, per_city=9)  # every Tokyo image, so also the one at `mine`
    assert mine.read_bytes() == b"user data"
    assert report.not_ours == [str(mine)]
    assert tokyo[3] not in set(pd.read_csv(out / dl.MANIFEST, dtype=str).id)


def test_unreachable_server_fails_fast(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(dl.DownloadError, match="No network.*CITYVIZ_DATA"):
        dl.fetch_osv5m(tmp_path / "osv5m", endpoint=f"http://127.0.0.1:{port}", shards=SHARDS)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "osv5m").exists()


def test_http_error_and_checksum_mismatch(osv, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404 .*not found on the Hub"):
        dl.fetch_hub_file(dl.OSV5M_REPO, "nothing/here.csv", tmp_path / "x.csv", repo_type="dataset",
                          endpoint=osv.url)
    osv.corrupt.add("test.csv")  # the CDN delivers a flipped byte: the Hub's sha256 no longer matches
    with pytest.raises(dl.DownloadError, match="Checksum mismatch for test.csv: got sha256"):
        hub_csv(osv, tmp_path / "test.csv")
    assert not (tmp_path / "test.csv").exists() and not (tmp_path / "test.csv.part").exists()
    assert (tmp_path / "test.csv.part.bad").exists()
    osv.corrupt.clear()
    assert hub_csv(osv, tmp_path / "test.csv")[0].read_bytes() == osv.files["test.csv"]  # a rerun fetches it again


def test_corrupted_zip_member_is_refused(osv, tmp_path):
    shard = "images/test/00.zip"
    data = bytearray(osv.files[shard])
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    middle = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[middle] ^= 0xFF  # a flipped byte inside the first member
    osv.files[shard] = bytes(data)
    tokyo_first = osv.rows[0]["id"]
    assert info.filename == f"00/{tokyo_first}.jpg"  # in the shard's sub-folder, as on the Hub
    with pytest.raises(dl.DownloadError, match="Checksum mismatch in .*Rerun"):
        fetch(osv, tmp_path / "osv5m", per_city=9)
    assert not (tmp_path / "osv5m" / "Tokyo" / f"{tokyo_first}.jpg").exists()


def test_malformed_metadata(osv, tmp_path):
    osv.files["test.csv"] = b"id,latitude\n1,2\n"
    with pytest.raises(dl.DownloadError, match="metadata file .* is malformed.*unique_city"):
        fetch(osv, tmp_path / "osv5m")


def test_server_without_ranges_falls_back_to_whole_shards(osv, tmp_path):
    osv.no_range |= {p for p in osv.files if p.endswith(".zip")}
    report = fetch(osv, tmp_path / "osv5m")
    assert report.written == {"Tokyo": 4, "Pittsburgh": 4}
    assert sorted(p.name for p in (tmp_path / "osv5m" / ".cache" / "shards").glob("*.zip")) == ["test-00.zip", "test-01.zip"]
    assert report.checks["images/test/01.zip"].startswith("whole shard: sha256 from the Hub (X-Linked-Etag)")


def test_full_disk_leaves_no_partial_image(osv, tmp_path, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(dl.DownloadError, match="disk is full"):
        fetch(osv, tmp_path / "osv5m")
    monkeypatch.undo()
    leftovers = [p for p in (tmp_path / "osv5m").rglob("*") if p.is_file() and p.suffix in (".jpg", ".part")]
    assert leftovers == []
    assert fetch(osv, tmp_path / "osv5m").written == {"Tokyo": 4, "Pittsburgh": 4}  # a rerun picks up cleanly


def test_segformer_weights_download_and_load_offline(tmp_path):
    import segmentation_models_pytorch as smp
    from cityviz_helpers.segmentation import load_ade20k_segmenter

    from cityviz_helpers.segmentation import SEGFORMER_VARIANTS

    made = tmp_path / "made"
    smp.Segformer(encoder_name="mit_b0", encoder_weights=None, classes=150).save_pretrained(str(made))
    repo = SEGFORMER_VARIANTS["b0"][0]
    assert repo == "smp-hub/segformer-b0-512x512-ade-160k"
    with HubServer({repo: {n: (made / n).read_bytes() for n in dl.SEGFORMER_FILES}}) as hub:
        folder = dl.fetch_segformer("b0", tmp_path / "models" / "segformer-b0-ade20k", endpoint=hub.url)
        # config.json is small and served directly; the weights come from the CDN, redirected
        assert hub.requests("cdn", "model.safetensors") and not hub.requests("cdn", "config.json")
    assert (folder / "model.safetensors").read_bytes() == (made / "model.safetensors").read_bytes()
    assert (folder / "config.json").read_bytes() == (made / "config.json").read_bytes()
    segmenter = load_ade20k_segmenter(folder, input_size=64)
    labels = segmenter(torch.randint(0, 255, (2, 3, 48, 48), dtype=torch.uint8))
    assert labels.shape == (2, 48, 48) and labels.min() >= 1 and labels.max() <= 150


def test_torchvision_weights_are_verified_against_their_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = Path(dl.weights_url("resnet18")).name  # e.g. resnet18-f37072fd.pth
    with FileServer({"/" + name: b"not the real weights"}) as server:
        with pytest.raises(dl.DownloadError, match="Checksum mismatch"):
            dl.fetch_torchvision_weights(["resnet18"], base_url=server.url)
    assert not list((tmp_path / "torch").rglob("*.pth"))


def fake_kaggle(tmp_path, cities, record=None):
    """A stand-in for the Kaggle tool that "downloads" a small archive in GSV-Cities' layout
    (Images/<City>/<City>_<place>_....jpg, as in amaralibey/gsv-cities' README)."""
    archive = tmp_path / "gsv-cities.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for city, n in cities.items():
            for i in range(n):
                z.writestr(f"Images/{city}/{city}_{i:07d}_2019_06_090_0.0_0.0_pano.JPG", fx.jpeg(np.random.default_rng(i)))
    tool = tmp_path / "bin" / "kaggle"
    tool.parent.mkdir(exist_ok=True)
    log = f'echo "$@" >> {record}\n' if record else ""
    tool.write_text(f"#!/bin/sh\n{log}cp {archive} \"$6/gsv-cities.zip\"\n")
    tool.chmod(0o755)
    return tool


def no_kaggle_credentials(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_gsv_cities_names_are_checked_before_downloading(tmp_path, monkeypatch):
    no_kaggle_credentials(tmp_path, monkeypatch)
    calls = tmp_path / "calls.txt"
    tool = fake_kaggle(tmp_path, {"PRS": 3, "London": 2}, record=calls)
    with pytest.raises(dl.DownloadError, match="GSV-Cities has no city 'Tokyo'.*PRS is Paris.*Nothing was downloaded"):
        dl.fetch_gsv_cities(tmp_path / "gsv", ["Tokyo", "Pittsburgh"], kaggle=str(tool))
    assert not calls.exists() and not (tmp_path / "gsv").exists()  # the tool never ran
    assert dl.match_gsv_cities(["paris", "Oslo", "prague", "Toronto", "buenos aires", "LONDON"]) == [
        "PRS", "OSL", "PRG", "TRT", "BuenosAires", "London"]
    assert len(dl.GSV_CITIES) == 23 and set(dl.GSV_DEFAULT_CITIES) <= set(dl.GSV_CITIES)


def test_gsv_cities_accepts_every_kaggle_credential_form(tmp_path, monkeypatch):
    no_kaggle_credentials(tmp_path, monkeypatch)
    assert dl.kaggle_credentials() is None
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token")
    assert dl.kaggle_credentials() == "KAGGLE_API_TOKEN"
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    (tmp_path / "home" / ".kaggle" / "access_token").write_text("token")
    assert dl.kaggle_credentials().endswith(".kaggle/access_token")
    (tmp_path / "home" / ".kaggle" / "access_token").unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    assert dl.kaggle_credentials() == "KAGGLE_USERNAME and KAGGLE_KEY"


def test_gsv_cities_lets_the_kaggle_tool_authenticate(tmp_path, monkeypatch, capsys):
    no_kaggle_credentials(tmp_path, monkeypatch)  # e.g. a `kaggle auth login` this script cannot see
    tool = fake_kaggle(tmp_path, {"PRS": 5, "London": 3, "Boston": 2})
    counts = dl.fetch_gsv_cities(tmp_path / "gsv", ["Paris", "london"], per_city=4, kaggle=str(tool))
    assert counts == {"PRS": 4, "London": 3}
    assert sorted(p.name for p in (tmp_path / "gsv").iterdir() if not p.name.startswith(".")) == ["London", "PRS"]
    assert "the Kaggle tool decides" in capsys.readouterr().out
    # a tool that fails (not signed in): its own message goes to the terminal, ours says how to sign in
    failing = tmp_path / "bin" / "kaggle-fails"
    failing.write_text("#!/bin/sh\necho 'You must authenticate before you can call the Kaggle API.' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(dl.DownloadError, match="exit code 1.*kaggle auth login.*KAGGLE_API_TOKEN"):
        dl.fetch_gsv_cities(tmp_path / "gsv2", ["Boston"], kaggle=str(failing))


def test_gsv_cities_list_and_defaults_on_the_command_line(tmp_path, monkeypatch, capsys):
    assert dl.main(["--source", "gsv-cities", "--list-cities"]) == 0
    listing = capsys.readouterr().out
    assert "PRS" in listing and "paris" in listing and "WashingtonDC" in listing
    no_kaggle_credentials(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(fake_kaggle(tmp_path, {"London": 2, "Boston": 2}).parent) + os.pathsep
                       + os.environ["PATH"])
    assert dl.main(["--source", "gsv-cities", "--out", str(tmp_path / "gsv")]) == 0  # default: London,Boston
    assert "{'London': 2, 'Boston': 2}" in capsys.readouterr().out


def test_shell_entry_point_runs_from_any_directory(tmp_path):
    script = REPO_ROOT / "data_download.sh"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    for option in ("--cities", "--per-city", "--list-cities", "--weights", "--source", "--out", "--splits"):
        assert option in done.stdout
    bad = subprocess.run([str(script), "--per-city", "0"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "--per-city must be at least 1" in bad.stderr


def test_command_line_lists_cities_and_fetches(osv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dl, "OSV5M_SHARDS", SHARDS)
    out = tmp_path / "osv5m"
    assert dl.main(["--list-cities", "3", "--endpoint", osv.url, "--out", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "unique_city" in listing[0] and listing[1].split()[0] == "Tokyo_NaN_Tokyo_JP" and len(listing) == 4
    assert dl.main(["--cities", "Paris,Tokyo", "--per-city", "2", "--endpoint", osv.url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "new images {'Paris': 2, 'Tokyo': 2}" in printed
    assert "verified test.csv: already there (verified when it was fetched)" in printed  # by --list-cities
    assert "verified images/test/00.zip: members read with ranges; each image checked against its zip CRC-32" in printed
    assert dl.main(["--cities", "Atlantis", "--endpoint", osv.url, "--out", str(out)]) == 1
    assert "No city called 'Atlantis'" in capsys.readouterr().err


def test_images_written_before_an_interruption_are_recognised(osv, tmp_path):
    out = tmp_path / "osv5m"
    fetch(osv, out)
    manifest = pd.read_csv(out / dl.MANIFEST, dtype=str)
    manifest.iloc[:5].to_csv(out / dl.MANIFEST, index=False)  # as if killed before the manifest was saved
    report = fetch(osv, out)
    assert report.written == {"Tokyo": 0, "Pittsburgh": 0} and report.kept == 8 and report.not_ours == []
    assert sorted(pd.read_csv(out / dl.MANIFEST, dtype=str).id) == sorted(manifest.id)


def test_help_works_before_the_environment_is_installed(tmp_path):
    # `python -S` sees no site-packages: as in a fresh clone before `make install`
    bare = [sys.executable, "-S", "-m", "cityviz_helpers.download"]
    done = subprocess.run(bare + ["--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "--per-city" in done.stdout, done.stderr
    done = subprocess.run(bare + ["--out", str(tmp_path / "x")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "make install" in done.stderr and not (tmp_path / "x").exists()
