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


def test_the_cpu_is_named_with_what_sets_its_kind_apart(monkeypatch):
    import bench.machine as m

    kinds = {frozenset({"avx512f", "avx512_bf16", "amx_bf16"}): "AMX, AVX-512 BF16, AVX-512)",
             frozenset({"avx512f", "avx512_bf16"}): "AVX-512 BF16, AVX-512; no AMX)",
             frozenset({"avx512f"}): "AVX-512; no AMX, no AVX-512 BF16)",
             frozenset({"avx2"}): "(no AMX, no AVX-512 BF16, no AVX-512)"}
    for flags, tail in kinds.items():
        monkeypatch.setattr(m, "cpu_flags", lambda flags=flags: flags)
        assert m.cpu_name().endswith(tail)
