"""Seeds (finetune.seeds): replicate paths, per-seed configs, mean +/- std tables, spread notes."""
import dataclasses
import math

import pytest

from langtail import io


def _cfg(tiny_cfg, **ft):
    return dataclasses.replace(tiny_cfg, finetune=dataclasses.replace(tiny_cfg.finetune, **ft))


def test_seed_dirs_keep_the_plain_path_for_finetune_seed(tiny_cfg):
    from langtail.seeds import seed_dirs, seed_of, with_seed

    assert seed_dirs(tiny_cfg) == [""]
    c = _cfg(tiny_cfg, seed=1, seeds=[0, 1, 2])
    assert seed_dirs(c) == ["", "/seed0", "/seed2"]
    assert seed_of("", 7) == 7 and seed_of("/seed12", 7) == 12
    with pytest.raises(ValueError, match="not a seed replicate"):
        seed_of("/run3", 0)
    s2 = with_seed(c, "/seed2")
    assert s2.finetune.seed == 2 and s2.ca4ltr.seed == 2 and s2.finetune.lr == c.finetune.lr
    assert with_seed(c, "") is c


def test_seeds_consistency_errors_name_the_keys():
    from langtail.config import ConfigError, dataset_config

    raw = {"datasets": {"d": {"finetune": {"seeds": [1, 2]}}}}
    with pytest.raises(ConfigError, match=r"finetune.seeds \[1, 2\] must contain finetune.seed \(0\)"):
        dataset_config(raw, "d")
    raw = {"datasets": {"d": {"finetune": {"seeds": [0, 0]}}}}
    with pytest.raises(ConfigError, match="distinct"):
        dataset_config(raw, "d")
    raw = {"datasets": {"d": {"finetune": {"seeds": [0, 1]}, "ca4ltr": {"seed": 3}}}}
    with pytest.raises(ConfigError, match=r"ca4ltr.seed \(3\) != finetune.seed"):
        dataset_config(raw, "d")


def _m(overall, many=50.0, medium=40.0, few=None):
    return {"overall": overall, "many": many, "medium": medium, "few": few}


def test_mean_std_and_spread_notes_by_hand():
    from langtail.report.seeds import close_pairs, fmt_mean_std, mean_std

    m, s, n = mean_std([70.0, 72.0, 74.0])
    assert (m, n) == (72.0, 3) and s == pytest.approx(2.0)  # sample std: sqrt((4 + 0 + 4) / 2)
    assert mean_std([None, 1.0]) == (1.0, None, 1)
    assert fmt_mean_std([_m(70.0), _m(72.0), _m(74.0)], "overall") == "72.0 ± 2.0"
    assert fmt_mean_std([_m(70.0)], "overall") == "70.0" and fmt_mean_std([_m(70.0)], "few") == "–"
    rows = {"A": [_m(70.0, 60.0), _m(74.0, 60.0)], "B": [_m(73.0, 70.0), _m(75.0, 70.0)], "C": [_m(90.0, 60.0), _m(90.0, 60.0)]}
    # A 72 ± 2.83, B 74 ± 1.41: |2| < 4.24 on overall; many: A 60 ± 0 vs B 70 ± 0: no spread
    # (medium / many: every std is 0, so no pair is "within the spread" there)
    spread = 2 * math.sqrt(2) + math.sqrt(2)
    assert close_pairs(rows) == [f"- A vs B: differ by less than their spread on overall (2.0 < {spread:.1f})."]


def test_report_seed_rows_and_section(tmp_path):
    from langtail.report.seeds import seeds_section
    from langtail.stages.report import seed_rows

    io.write_json(tmp_path / "l1.json", _m(74.0))
    io.write_json(tmp_path / "l2.json", _m(76.0))
    rows, seeds = seed_rows({"lgr": _m(72.0), "zeroshot": _m(10.0)},
                            {"lgr/seed1": tmp_path / "l1.json", "lgr/seed2": tmp_path / "l2.json"}, 0)
    assert [r["overall"] for r in rows["lgr"]] == [72.0, 74.0, 76.0] and seeds == {"lgr": [0, 1, 2]}
    text = "\n".join(seeds_section(rows, seeds))
    assert "| lgr | 0, 1, 2 | 74.0 ± 2.0 | 50.0 ± 0.0 | 40.0 ± 0.0 | – |" in text
    with pytest.raises(ValueError, match="expected <model>/seed<k>"):
        seed_rows({"lgr": _m(1.0)}, {"lgr/run1": tmp_path / "l1.json"}, 0)


def test_ablations_table_shows_mean_std_over_seed_replicates(tmp_path, tiny_cfg):
    from conftest import staged

    from langtail.stages import ablations

    files = {}
    for key, v in {"lgr": 70.0, "lgr:seed1": 72.0, "fc": 50.0, "fc:seed1": 54.0,
                   "zeroshot": 20.0, "zeroshot_anchors": 21.0}.items():
        p = tmp_path / f"{key.replace(':', '_')}.json"
        io.write_json(p, _m(v))
        files[key] = p
    out = tmp_path / "ablations.md"
    ablations.run(staged(tiny_cfg, "ablations"), "demo", out, files, {})
    text = out.read_text()
    assert "| #1 | full: CVLP + AnSS + LGR | 71.0 ± 1.4 |" in text
    assert "| base | vision-only baseline (FC, no CVLP) | 52.0 ± 2.8 |" in text
    assert "| 20.0 |" in text and "mean ± sample std over the seeds" in text
