def report_inputs(wildcards):
    c = cfg(wildcards.dataset)
    models = list(c.finetune.heads) + ["zeroshot"]
    return {
        "metrics": [ds_path("eval", m, "metrics.json") for m in models],
        "corpus_stats": ds_path("corpus_stats.parquet"),
        "anchors": ds_path("anchors.parquet"),
        "captions": ds_path("captions.parquet"),
        "manifest": ds_path("manifest.parquet"),
    }


rule report:
    """results/<dataset>/report.md with tables, corpus statistics and PNG figures."""
    input:
        unpack(report_inputs),
    output:
        ds_path("report.md"),
    params:
        cfg=params_json("data", "corpus", "captions", "model", "pretrain", "anchors", "finetune", "evaluate", "report"),
        results=ds_path(),
    log:
        ds_path("logs", "report.log"),
    shell:
        "langtail report --params {params.cfg:q} --dataset {wildcards.dataset} --results-dir {params.results}"
        " --out {output} 2> {log}"
