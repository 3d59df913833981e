rule report:
    """results/<dataset>/report.md with tables, corpus statistics and PNG figures."""
    input:
        unpack(report_inputs),
    output:
        ds_path("report.md"),
    params:
        cfg=params_json("data", "corpus", "captions", "model", "pretrain", "anchors", "finetune", "evaluate", "report"),
        results=ds_path(),
        configs=CONFIG_FILE_OPTS,
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "report.log"),
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail report --params {params.cfg:q} --dataset {wildcards.dataset} --results-dir {params.results}"
        " --out {output} {params.configs} 2> {log}"
