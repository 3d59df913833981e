# Snakemake's own browsable report: `snakemake --report report.zip results/<dataset>/report.md`.
# Outputs shown in it are wrapped in report(...) in their rule files with a caption
# (workflow/report/*.rst, Jinja + reStructuredText), a category per stage and a subcategory per
# model / text source; the helpers below give them label columns (shown as a table in the
# report's result lists). Not a stage: no rule here.
import json as _json


def report_caption(name):
    """Caption file of a report entry, relative to the rule files (workflow/rules/)."""
    return os.path.join("..", "report", f"{name}.rst")


def _accuracy(path, key):
    v = _json.loads(open(path, encoding="utf-8").read()).get(key)
    return "-" if v is None else f"{v:.1f}"


def accuracy_labels(model_key):
    """Labels of a metrics.json entry: the model and its top-1 % (overall, many, medium, few),
    read from the file when the report is built."""

    def labels(wildcards, output):
        model = wildcards.get(model_key) if model_key == "model" else f"ca4ltr_{wildcards.get(model_key)}"
        d = {"model": model, "table": "metrics"}
        d.update({k: _accuracy(output.metrics, k) for k in ("overall", "many", "medium", "few")})
        return d

    return labels


# Parquet tables open as downloads in the report (Python's mimetypes does not know the suffix)
import mimetypes as _mimetypes

_mimetypes.add_type("application/vnd.apache.parquet", ".parquet")
