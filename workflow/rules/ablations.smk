rule ablations:
    """Paper Table 4 / Table 10 rows for one dataset: results/<dataset>/ablations.md."""
    input:
        ablation_inputs,
    output:
        ds_path("ablations.md"),
    params:
        cfg=params_json("finetune", "report"),
        variants=lambda w: json.dumps({v: variant_overrides(config, v) for v in cfg(w.dataset).report.ablations}),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "ablations.log"),
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail ablations --params {params.cfg:q} --dataset {wildcards.dataset} --variants {params.variants:q}"
        " --out {output} 2> {log}"
