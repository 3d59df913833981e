"""Atomic writes: a failed or killed writer never leaves a partial artifact."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from langtail import io


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert io.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_parquet_roundtrip_with_metadata_and_column_check(tmp_path):
    df = pd.DataFrame({"a": pd.Series([1, 2], dtype="int32"), "b": ["x", "y"]})
    io.write_parquet(tmp_path / "t.parquet", df, metadata={"k": [1, 2]})
    back = io.read_parquet(tmp_path / "t.parquet", {"a": "int32", "b": "string"})
    assert back["a"].tolist() == [1, 2]
    assert io.read_parquet_metadata(tmp_path / "t.parquet") == {"k": [1, 2]}
    with pytest.raises(ValueError, match="missing column 'c'"):
        io.read_parquet(tmp_path / "t.parquet", {"c": "int32"})
    with pytest.raises(ValueError, match="dtype"):
        io.read_parquet(tmp_path / "t.parquet", {"a": "float32"})


def test_killed_writer_leaves_no_artifact(tmp_path):
    """SIGKILL a process in the middle of a large write: the target must not exist."""
    target = tmp_path / "big.parquet"
    code = textwrap.dedent(f"""
        import numpy as np, pandas as pd, sys, time
        from langtail import io
        df = pd.DataFrame({{"x": np.random.rand(2_000_000)}})
        with io.atomic_path({str(target)!r}, ".parquet") as tmp:
            df.to_parquet(tmp)
            print("written-tmp", flush=True)
            time.sleep(30)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "written-tmp"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not target.exists()
    # a rerun succeeds and leaves exactly the final file (plus the orphan temp, which is hidden)
    io.write_parquet(target, pd.DataFrame({"x": [1.0]}))
    assert pd.read_parquet(target)["x"].tolist() == [1.0]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["big.parquet"]


def test_fingerprint_depends_on_file_content(tmp_path):
    f = tmp_path / "f"
    f.write_text("a")
    a = io.fingerprint({"x": 1}, f)
    f.write_text("b")
    assert io.fingerprint({"x": 1}, f) != a
    assert io.fingerprint({"x": 2}, f) != io.fingerprint({"x": 1}, f)
    time.sleep(0)


def test_md_table_keeps_columns_and_marks_missing_numbers():
    from langtail.metrics import fmt_pct
    from langtail.report.tables import md_table

    assert [fmt_pct(v) for v in (None, float("nan"), 53.25, 0)] == ["–", "–", "53.2", "0.0"]
    table = md_table([["a|b", fmt_pct(1.26)]], ["text", "acc"]).splitlines()
    assert table == ["| text | acc |", "|---|---|", "| a/b | 1.3 |"]
    assert all(line.count("|") == 3 for line in table)


def test_reproduce_line_names_extra_config_files():
    from langtail.report.tables import reproduce_line

    assert reproduce_line("results/demo/report.md", "demo") == \
        "`snakemake --cores 2 results/demo/report.md` (config: `config.yaml`, dataset `demo`)."
    line = reproduce_line("results/x/text_quality.md", "x", ["my cfg.yaml"], ", section `ca4ltr`")
    assert line == ("`snakemake --cores 2 --configfile 'my cfg.yaml' -- results/x/text_quality.md` "
                    "(config: `config.yaml` + `my cfg.yaml`, dataset `x`, section `ca4ltr`).")
