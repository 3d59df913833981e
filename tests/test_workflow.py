"""The Snakemake workflow end to end on a tiny demo config, then dry-run rerun checks."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _config(**overrides) -> dict:
    demo = {k: dict(v) for k, v in TINY.items()}
    for sec, vals in overrides.items():
        demo.setdefault(sec, {}).update(vals)
    return {"results_dir": "results", "datasets": {"demo": demo}}


def _snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def _planned_jobs(workdir: Path, target: str = "results/demo/report.md") -> dict[str, int]:
    """Jobs per rule a dry run would execute (parsed from Snakemake's job-stats table)."""
    p = _snakemake(workdir, "-n", target)
    out = p.stdout + p.stderr
    if "Nothing to be done" in out:
        return {}
    jobs = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def _planned_rules(workdir: Path) -> set[str]:
    return set(_planned_jobs(workdir))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    (wd / "config.yaml").write_text(yaml.safe_dump(_config()))
    _snakemake(wd, "--cores", "2", "results/demo/report.md")
    return wd


def test_pipeline_writes_report_with_all_rows(built):
    report = (built / "results/demo/report.md").read_text()
    for row in ("VL-LTR", "Baseline (vision-only, FC)", "zero-shot", "switched off", "M_min"):
        assert row in report, row
    assert (built / "results/demo/figures/report/per_class_accuracy.png").stat().st_size > 1000
    # training curves from the declared checkpoints' histories (pretrain with tau, every head)
    assert "## Training curves" in report and "| finetune/lgr | 2 |" in report and "| pretrain | 1 |" in report
    assert (built / "results/demo/figures/report/training_curves.png").stat().st_size > 1000


def test_second_run_has_nothing_to_do(built):
    assert _planned_rules(built) == set()


def test_snakemake_report_zip_holds_the_figures_and_tables(built, tmp_path):
    """`snakemake --report report.zip results/demo/report.md`: Snakemake's browsable report with the
    report stage's figures, the markdown report and every evaluated model's tables, grouped by
    stage (category) and model (subcategory), with captions and accuracy labels."""
    import json
    import zipfile

    out = tmp_path / "report.zip"
    _snakemake(built, "--report", str(out), "results/demo/report.md")
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        html = z.read("report/report.html").decode()
        pngs = {n.rsplit("/", 1)[1]: z.read(n) for n in names if n.endswith(".png")}
    figures = sorted(p.name for p in (built / "results/demo/figures/report").glob("*.png"))
    assert {"per_class_accuracy.png", "gain_lgr_vs_fc.png"} <= set(figures)
    for f in figures:  # every figure of the report stage is inside, byte for byte
        assert pngs[f] == (built / "results/demo/figures/report" / f).read_bytes(), f
    for suffix in ("report.md", "eval/lgr/metrics.json", "eval/fc/per_class.parquet"):
        assert any(n.endswith(suffix.rsplit("/", 1)[-1]) for n in names), suffix
    for text in ("Evaluation", "Report", "figures", "lgr", "fc",  # categories, subcategories
                 "classes sorted by training count",  # a caption (workflow/report/report_figures.rst)
                 "long-tailed image recognition guided by language"):  # workflow description
        assert text in html, text
    overall = json.loads((built / "results/demo/eval/lgr/metrics.json").read_text())["overall"]
    assert f"{overall:.1f}" in html  # accuracy label column read from metrics.json


def _with_config(built, tmp_path, **over) -> Path:
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "results").symlink_to(built / "results")
    shutil.copytree(built / ".snakemake", wd / ".snakemake", symlinks=True)
    (wd / "config.yaml").write_text(yaml.safe_dump(_config(**over)))
    return wd


TRAIN = {"pretrain", "anchors", "embed_text", "finetune", "evaluate", "report"}

#: (section, key, new value) -> the rules a dry run must plan: for every stage of the demo
#: target, a key it reads reruns it and what depends on it; a key no stage of the target
#: reads reruns nothing
RERUNS = [
    ("data", "imbalance_factor", 5, {"longtail"} | TRAIN),           # longtail
    ("corpus", "min_tokens", 4, {"corpus"} | TRAIN),                # corpus
    ("pretrain", "lr", 1e-3, TRAIN),                                 # pretrain
    ("anchors", "images_per_class", 4, TRAIN - {"pretrain"}),         # anchors
    ("anchors", "num_anchors", 6, TRAIN - {"pretrain"}),              # anchors + embed_text
    ("finetune", "lr", 5e-4, {"finetune", "evaluate", "report"}),   # finetune
    ("finetune", "alpha", 0.3, {"evaluate", "report"}),              # evaluate (inference only)
    ("evaluate", "batch_size", 17, {"evaluate", "report"}),          # evaluate
    ("report", "top_sentences", 2, {"report"}),                      # report
    ("finetune", "loss", "balanced_softmax", {"finetune", "evaluate", "report"}),  # finetune (every head)
    ("finetune", "la_tau", 2.0, set()),     # read only under loss: logit_adjusted (demo: ce)
    ("evaluate", "posthoc_la_tau", 1.0, {"evaluate", "report"}),  # evaluate (post-hoc logit adjustment)
    ("finetune", "knn_k", 3, set()),        # read only by the knn head, not trained here
    ("ca4ltr", "width", 8, set()),          # CA4LTR stages are not in this target
    ("captions", "max_new_tokens", 5, set()),  # captions are not a corpus source here
    ("data", "allow_download", True, {"longtail"} | TRAIN),  # read by longtail
]


@pytest.mark.parametrize("section,key,value,expected", RERUNS, ids=[f"{s}.{k}" for s, k, *_ in RERUNS])
def test_a_key_reruns_exactly_the_stages_that_read_it(built, tmp_path, section, key, value, expected):
    wd = _with_config(built, tmp_path, **{section: {key: value}})
    assert _planned_rules(wd) == expected


def test_adding_a_head_trains_only_that_head(built, tmp_path):
    wd = _with_config(built, tmp_path, finetune={"heads": ["lgr", "fc", "fc_cvlp"]})
    assert _planned_jobs(wd) == {"finetune": 1, "evaluate": 1, "report": 1}


def test_anchor_change_does_not_retrain_the_fc_baseline(built, tmp_path):
    """fc reads no anchor embeddings (issue #12): an anchors change retrains lgr only."""
    wd = _with_config(built, tmp_path, anchors={"images_per_class": 4})
    jobs = _planned_jobs(wd)
    assert jobs["finetune"] == 1 and jobs["evaluate"] == 2  # lgr; evaluate lgr + zeroshot_anchors


def test_every_variant_report_reads_its_declared_inputs(built, tmp_path):
    """results/demo+cutoff/report.md plans, reading the base run's manifest and corpus (issue #12)."""
    wd = _with_config(built, tmp_path)
    p = _snakemake(wd, "-n", "-p", "results/demo+cutoff/report.md")
    out = p.stdout + p.stderr
    report_cmd = [ln for ln in out.splitlines() if "langtail report" in ln]
    assert len(report_cmd) == 1, out[-3000:]
    assert "--manifest results/demo/manifest.parquet" in report_cmd[0]
    assert "--corpus-stats results/demo/corpus_stats.parquet" in report_cmd[0]
    assert "results/demo+cutoff/eval/lgr" in report_cmd[0]


def test_adding_a_seed_reruns_no_existing_job(built, tmp_path):
    """finetune.seeds only selects jobs: the finetune.seed run keeps its plain paths, each other
    seed adds finetune/<head>/seed<k>/ + eval/<head>/seed<k>/ per head, and the report (new inputs)."""
    wd = _with_config(built, tmp_path, finetune={"seeds": [0]})
    assert _planned_jobs(wd) == {}
    (wd / "config.yaml").write_text(yaml.safe_dump(_config(finetune={"seeds": [0, 1]})))
    assert _planned_jobs(wd) == {"finetune": 2, "evaluate": 2, "report": 1}
    p = _snakemake(wd, "-n", "-p", "results/demo/report.md")
    out = p.stdout + p.stderr
    assert "results/demo/finetune/lgr/seed1/model.pt" in out and "results/demo/eval/fc/seed1/metrics.json" in out
    assert "output: results/demo/finetune/lgr/model.pt" not in out  # the existing seed-0 run is not planned


def test_declared_keys_match_the_rerun_table():
    """The table above agrees with the stages' declarations (a key is read where it says)."""
    from langtail.config import flat_keys
    from langtail.stages import stage_keys

    read = {s: flat_keys(stage_keys(s)) for s in ("longtail", "corpus", "pretrain", "anchors", "embed_text",
                                                  "finetune", "evaluate", "report")}
    for section, key, _, expected in RERUNS:
        if expected:  # (the empty rows: keys read only by jobs outside the target; the dry run shows it)
            readers = {s for s, keys in read.items() if f"{section}.{key}" in keys}
            assert readers and readers <= expected, (section, key, readers)


def test_config_typo_fails_before_any_job(tmp_path):
    cfg = _config(finetune={"learning_rate": 0.1})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    p = _snakemake(tmp_path, "-n", "results/demo/report.md", check=False)
    assert p.returncode != 0
    assert "datasets.demo.finetune" in p.stderr + p.stdout and "learning_rate" in p.stderr + p.stdout
    assert not (tmp_path / "results").exists()


def test_repo_workflow_plans_demo(tmp_path):
    p = _snakemake(ROOT, "-n", "results/demo/report.md", check=False)
    assert p.returncode == 0, p.stderr[-3000:]


def test_lint_is_clean():
    p = _snakemake(ROOT, "--lint", check=False)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]


def test_ablation_variants_reuse_unchanged_upstream_stages(built, tmp_path):
    """demo+cutoff changes only anchors: it must reuse the base corpus and CVLP checkpoint."""
    wd = _with_config(built, tmp_path, report={"ablations": ["cutoff"]})
    p = _snakemake(wd, "-n", "results/demo/ablations.md")
    out = p.stdout + p.stderr
    planned = {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", out, re.M)} - {"total"}
    assert planned == {"anchors", "embed_text", "finetune", "evaluate", "ablations"}
    assert "results/demo+cutoff/anchors.parquet" in out
    assert "results/demo+cutoff/pretrain" not in out and "results/demo+cutoff/corpus" not in out


def test_ablations_table_reads_back(tmp_path):
    import json

    from langtail.config import from_dict
    from langtail.recipes import BUILTIN_VARIANTS
    from langtail.stages import ablations

    def metrics(path, overall):
        path.mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps(
            {"overall": overall, "many": 1.0, "medium": 2.0, "few": None}))

    for m, v in (("lgr", 50.0), ("fc", 40.0), ("zeroshot", 30.0), ("zeroshot_anchors", 28.0)):
        metrics(tmp_path / "demo" / "eval" / m, v)
    metrics(tmp_path / "demo+cutoff" / "eval" / "lgr", 45.0)
    cfg = from_dict({"finetune": {"heads": ["lgr", "fc"]}, "report": {"ablations": ["cutoff"]}})
    files = {"lgr": "demo/eval/lgr", "fc": "demo/eval/fc", "zeroshot": "demo/eval/zeroshot",
             "zeroshot_anchors": "demo/eval/zeroshot_anchors", "cutoff:lgr": "demo+cutoff/eval/lgr"}
    ablations.run(cfg, "demo", tmp_path / "demo" / "ablations.md",
                  {k: tmp_path / v / "metrics.json" for k, v in files.items()}, {"cutoff": BUILTIN_VARIANTS["cutoff"]})
    text = (tmp_path / "demo" / "ablations.md").read_text()
    assert "| #1 | full: CVLP + AnSS + LGR | 50.0 |" in text
    assert "| #7 | Cut Off instead of AnSS | 45.0 |" in text and '"strategy": "cutoff"' in text
    assert "| base | vision-only baseline (FC, no CVLP) | 40.0 | 1.0 | 2.0 | – |" in text
    assert "#2" not in text  # no_cvlp not requested
    with pytest.raises(ValueError, match="no metrics file given for 'fc'"):  # only declared inputs are read
        ablations.run(cfg, "demo", tmp_path / "x.md", {k: tmp_path / v / "metrics.json" for k, v in files.items()
                                                        if k != "fc"}, {})


@pytest.mark.slow
@pytest.mark.shared_data
def test_cifar10_lt_quick_pipeline_on_real_cifar10(tmp_path):
    """`snakemake results/cifar10_lt_quick/report.md` on the real CIFAR-10 in ../shared (slow: ~5 min)."""
    from conftest import SHARED

    tar = SHARED / "data" / "cifar-10-python-from-jpeg.tar.gz"
    if not tar.exists():
        pytest.skip(f"{tar} is absent (the CIFAR-10 copy in ../shared/data)")
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    quick = raw["datasets"]["cifar10_lt_quick"]
    quick["data"]["root"] = str(tar)
    quick["data"]["verify_checksums"] = False  # the shared copy was decoded from JPEG: md5s differ
    quick["corpus"]["descriptions_file"] = str(SHARED / "data/text/susx_cupl/CuPL_prompts_cifar10.json")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"results_dir": "results", "defaults": raw.get("defaults", {}), "datasets": {"cifar10_lt_quick": quick}}))
    _snakemake(tmp_path, "--cores", "2", "results/cifar10_lt_quick/report.md")
    report = (tmp_path / "results/cifar10_lt_quick/report.md").read_text()
    assert "12406 training images (5000 .. 50 per class" in report
    assert "many 8 classes, medium 2 classes, few 0 classes" in report


@pytest.mark.slow
def test_seeded_run_reports_mean_std_and_curves(built, tmp_path):
    """finetune.seeds: [0, 1] trains seed 1 of every head next to the existing seed-0 runs; the
    report shows mean ± std per head and the curves of every run."""
    wd = tmp_path / "wd"
    wd.mkdir()
    shutil.copytree(built / "results", wd / "results", symlinks=True)
    shutil.copytree(built / ".snakemake", wd / ".snakemake", symlinks=True)
    (wd / "config.yaml").write_text(yaml.safe_dump(_config(finetune={"seeds": [0, 1]})))
    before = (wd / "results/demo/finetune/lgr/model.pt").stat().st_mtime_ns
    _snakemake(wd, "--cores", "2", "results/demo/report.md")
    assert (wd / "results/demo/finetune/lgr/model.pt").stat().st_mtime_ns == before
    assert (wd / "results/demo/eval/fc/seed1/metrics.json").exists()
    report = (wd / "results/demo/report.md").read_text()
    assert "## Seeds: mean ± std" in report and "| 0, 1 |" in report and " ± " in report
    assert "| finetune/lgr/seed1 | 2 |" in report
