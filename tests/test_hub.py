"""The downloader against a Hub-like loopback server (tests/httpfixture.py's
HubServer): stored files redirected to a CDN with the sha256 on the redirect,
a CDN whose own ETag is another hash and whose signed addresses expire, small
files served directly with their git blob id, and the smp-hub Segformer names."""

from __future__ import annotations

import hashlib
import json

import pytest

from cityviz_helpers import download as dl
from cityviz_helpers.segmentation import SEGFORMER_VARIANTS, load_ade20k_segmenter, segformer_variant

from httpfixture import HubServer, git_blob_id
import osv5m_fixture as fx

SHARDS = {"test": 2}


@pytest.fixture
def osv():
    files, rows = fx.build()
    with HubServer({fx.REPO: files}) as hub:
        hub.rows, hub.files = rows, hub.repos[fx.REPO]
        yield hub


def fetch_csv(hub, dest):
    return dl.fetch_hub_file(dl.OSV5M_REPO, "test.csv", dest, repo_type="dataset", endpoint=hub.url,
                             show_progress=False)


def test_checksum_comes_from_the_redirect_not_from_the_cdn_etag(osv, tmp_path):
    body = osv.files["test.csv"]
    dest, check = fetch_csv(osv, tmp_path / "test.csv")
    assert dest.read_bytes() == body and check == "sha256 from the Hub (X-Linked-Etag)"
    # the bytes came from the CDN (one request to the Hub, one to the CDN), whose ETag is 64 hex but another hash
    assert len(osv.requests("hub", "test.csv")) == 1 and len(osv.requests("cdn", "test.csv")) == 1
    target = dl.resolve_hub_file(dl.hub_url(dl.OSV5M_REPO, "test.csv", "dataset", osv.url))
    assert target.sha256 == hashlib.sha256(body).hexdigest() and target.size == len(body)
    assert target.location.startswith(osv.cdn_url)
    # a rerun finds the file and leaves it alone
    before = dest.stat().st_mtime_ns
    assert fetch_csv(osv, tmp_path / "test.csv")[1].startswith("already there") and dest.stat().st_mtime_ns == before


def test_small_file_is_checked_against_its_git_blob_id(tmp_path):
    config = json.dumps({"architecture": "Segformer"}).encode()
    repo = SEGFORMER_VARIANTS["b0"][0]
    with HubServer({repo: {"config.json": config}}) as hub:
        dest, check = dl.fetch_hub_file(repo, "config.json", tmp_path / "config.json", endpoint=hub.url)
        assert dest.read_bytes() == config and check.startswith("git blob id")
        assert hub.requests("cdn") == []  # served directly by the Hub, no redirect
        hub.corrupt.add("config.json")
        with pytest.raises(dl.DownloadError, match="Checksum mismatch for config.json: got git blob id"):
            dl.fetch_hub_file(repo, "config.json", tmp_path / "again.json", endpoint=hub.url)
    assert not (tmp_path / "again.json").exists() and (tmp_path / "again.json.part.bad").exists()
    assert git_blob_id(config) == dl._git_blob_id(tmp_path / "config.json")


def test_expired_address_is_resolved_again_and_the_transfer_goes_on(osv, tmp_path):
    size = len(osv.files["test.csv"])
    osv.ttl = 60.0
    osv.drop["test.csv"] = size // 3
    osv.clock_step = 100.0  # the next CDN request comes after the address expired
    dest, _ = fetch_csv(osv, tmp_path / "test.csv")
    assert dest.read_bytes() == osv.files["test.csv"]
    cdn = [rng for _, rng in osv.requests("cdn", "test.csv")]
    # first transfer cut; the retry with the old address refused (403); a new address, from the same byte
    assert cdn == [None, f"bytes={size // 3}-", f"bytes={size // 3}-"]
    assert osv.expired == 1 and osv.signed == 2 and len(osv.requests("hub", "test.csv")) == 2


def test_an_address_refused_even_when_fresh_is_an_error(osv, tmp_path):
    osv.ttl = -1.0  # every address is already expired: renewing cannot help, and the loop must stop
    with pytest.raises(dl.DownloadError, match="HTTP 403 .*access denied"):
        fetch_csv(osv, tmp_path / "test.csv")
    assert osv.signed == 2  # one renewal, not more


def test_range_reads_survive_expiring_addresses(osv, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "BLOCK", 512)  # more, smaller reads: the addresses expire between them
    osv.ttl, osv.clock_step = 250.0, 100.0  # an address lasts about three CDN requests
    report = dl.fetch_osv5m(tmp_path / "osv5m", ["Tokyo", "Pittsburgh"], per_city=4, endpoint=osv.url,
                            shards=SHARDS)
    assert report.written == {"Tokyo": 4, "Pittsburgh": 4}
    assert report.renewed >= 1 and osv.expired >= report.renewed
    by_id = {r["id"]: r for r in osv.rows}
    for path in (tmp_path / "osv5m").rglob("*.jpg"):  # every image is the zip member, byte for byte
        assert by_id[path.stem]["unique_city"].startswith(path.parent.name)


def test_token_goes_to_the_hub_but_not_to_the_cdn(osv, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    fetch_csv(osv, tmp_path / "test.csv")
    assert ("hub", True) in osv.authorized
    assert all(not sent for host, sent in osv.authorized if host == "cdn")


def test_a_server_that_is_not_a_hub_is_named(osv, tmp_path):
    osv.no_commit_header = True
    with pytest.raises(dl.DownloadError, match="did not answer like the Hugging Face hub.*--endpoint"):
        fetch_csv(osv, tmp_path / "test.csv")
    assert not (tmp_path / "test.csv").exists()


def test_segformer_repositories_and_input_sizes():
    assert SEGFORMER_VARIANTS["b5"] == ("smp-hub/segformer-b5-640x640-ade-160k", 640)
    for v in ("b0", "b1", "b2", "b3", "b4"):
        assert SEGFORMER_VARIANTS[v] == (f"smp-hub/segformer-{v}-512x512-ade-160k", 512)


def test_segformer_b5_is_fetched_from_its_own_repository(tmp_path, capsys):
    import segmentation_models_pytorch as smp

    made = tmp_path / "made"
    smp.Segformer(encoder_name="mit_b0", encoder_weights=None, classes=150).save_pretrained(str(made))
    files = {n: (made / n).read_bytes() for n in dl.SEGFORMER_FILES}
    with HubServer({"smp-hub/segformer-b5-640x640-ade-160k": files}) as hub:
        folder = dl.fetch_segformer("b5", tmp_path / "models" / "segformer-b5-ade20k", endpoint=hub.url)
    printed = capsys.readouterr().out
    assert "model.safetensors: sha256 from the Hub" in printed and "config.json: git blob id" in printed
    assert segformer_variant(folder) == "b5"
    # the settings may feed smaller images than the model was trained at; that is said
    segmenter = load_ade20k_segmenter(folder, input_size=256)
    assert segmenter.input_size == 256 and "below the 640 px it was trained at" in capsys.readouterr().out
    assert load_ade20k_segmenter(folder, input_size=None).input_size == 640


def test_behind_a_proxy_the_quick_network_check_steps_aside(monkeypatch):
    import socket

    with socket.socket() as s:  # a port with nothing listening: a direct connection fails
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(dl.DownloadError, match="No network"):
        dl.check_network(f"http://10.255.255.1:{port}", timeout=0.5)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")  # huggingface_hub and urllib go through it
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    dl.check_network(f"http://10.255.255.1:{port}", timeout=0.5)  # no direct connection is tried


def test_token_reaches_every_hub_request_of_a_gated_repository(tmp_path, monkeypatch):
    """A gated or private repository answers 401 without the token: to the metadata request and
    to the transfer of a small git-stored file from the Hub's own address alike."""
    repo = "someone/private-segformer"
    config = json.dumps({"architecture": "Segformer"}).encode()
    with HubServer({repo: {"config.json": config}}) as hub:
        hub.gated.add(repo)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(dl.DownloadError, match="401.*HF_TOKEN"):
            dl.fetch_hub_file(repo, "config.json", tmp_path / "no-token.json", endpoint=hub.url)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        dest, check = dl.fetch_hub_file(repo, "config.json", tmp_path / "config.json", endpoint=hub.url)
        assert dest.read_bytes() == config and check.startswith("git blob id")
        asked = [sent for host, sent in hub.authorized if host == "hub"]
    assert asked[-2:] == [True, True]  # the metadata request and the transfer


def test_a_token_never_travels_to_another_host(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    assert dl.hub_headers(dl.HF_ENDPOINT + "/datasets/a/b/resolve/main/x.csv")["Authorization"].startswith("Bearer ")
    assert dl.hub_headers("https://cdn-lfs.example.org/x.csv") == {}
    assert dl.hub_headers("https://teacher.example.org/lab-pack.tar.gz") == {}
