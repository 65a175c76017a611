"""The teacher's pack from an address, end to end (``make test`` runs it after nbval has filled
the artifact cache): the quick run is packed, served from 127.0.0.1, and a fresh seat (an empty
home folder) runs every notebook with ``CITYVIZ_PACK`` set to the address, training nothing.
Its seconds are printed by ``benchmarks/bench_pack_url.py``, which this test runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cityviz_helpers.settings import get_settings

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pack_url.py"


def test_a_fresh_seat_runs_the_series_from_a_pack_on_a_web_server(monkeypatch):
    monkeypatch.delenv("CITYVIZ_ARTIFACTS")  # the checkout's own cache, which nbval filled
    monkeypatch.delenv("CITYVIZ_OUTPUTS")
    models = get_settings("quick", "synthetic").artifacts_dir / "models"
    if not models.is_dir() or not any(models.glob("*/model.json")):
        pytest.fail(f"No finished quick run in {models.parent}: run nbval first (`make test` does), or `make tutorial`.")
    spec = importlib.util.spec_from_file_location("bench_pack_url", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run()
    assert figures["computed_on_seat"] == [], "the seat computed steps the pack should have held"
    assert figures["transfers"] >= 1 and figures["packed_units"] > 10
    series = {p.stem for p in (Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]*_*.ipynb")}
    assert len(series) >= 5 and set(figures["notebooks_s"]) == series  # the chapters and their deep dives
