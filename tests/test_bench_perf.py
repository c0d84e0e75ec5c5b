"""bench/perf.py's results: each step keeps the machine it was measured on."""

import json
from pathlib import Path

from bench import perf

COMMITTED = Path(perf.RESULTS)


def test_a_step_saved_again_does_not_relabel_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(perf, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(perf, "TABLE", tmp_path / "results.md")
    results = json.loads(COMMITTED.read_text())
    other = {"cpu": "Some Other CPU", "cores": 2, "mem_gib": 23.5}
    results["ingest"] = {**results["ingest"], "machine": other}
    perf.RESULTS.write_text(json.dumps(results))
    perf.save("startup", {k: v for k, v in results["startup"].items() if k != "machine"})
    saved = json.loads(perf.RESULTS.read_text())
    assert saved["ingest"]["machine"] == other
    assert saved["startup"]["machine"] == perf.machine()
    table = perf.TABLE.read_text()
    assert "**ingest**, on Some Other CPU" in table
    assert f"**startup**, on {perf.machine()['cpu']}" in table
