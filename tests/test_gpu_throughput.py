"""The GPU throughput benchmark's CPU tiny mode (issue #11): runs, names the device, has both rows per task."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_throughput_tiny_mode_writes_synthetic_and_jpeg_rows(tmp_path):
    out = tmp_path / "gt.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--tiny", "--device", "cpu",
                        "--workers", "0", "--device-decode", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["tiny"] and res["device"].startswith("CPU") and res["device"] in r.stdout
    got = {(row["task"], row["input"]) for row in res["rows"]}
    for task in ("cvlp", "lgr"):
        assert {(task, "synthetic"), (task, "jpeg_loader"), (task, "jpeg_device_decode")} <= got
    for row in res["rows"]:
        assert row["images_per_s"] > 0 and row["images"] == row["batch"] * res["setting"]["steps"]
        if row["input"] == "synthetic":
            assert row["fraction_of_synthetic"] == 1.0
    md = out.with_suffix(".md").read_text()
    assert res["device"] in md and "| cvlp | jpeg_loader | 0 |" in md
