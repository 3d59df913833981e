rule ablations:
    """Paper Table 4 / Table 10 rows for one dataset: results/<dataset>/ablations.md."""
    input:
        unpack(ablation_inputs),
    output:
        report(ds_path("ablations.md"), caption=report_caption("ablations"), category="Ablations",
               labels={"dataset": "{dataset}", "file": "ablations.md"}),
    params:
        cfg=stage_params("ablations"),
        metrics=lambda w, input: " ".join(f"{k.replace('__', ':')}={v}" for k, v in input.items()),
        variants=lambda w: json.dumps({v: variant_overrides(config, v, w.dataset) for v in cfg(w.dataset).report.ablations}),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "ablations.log"),
    benchmark:
        ds_path("benchmarks", "ablations.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail ablations --params {params.cfg:q} --dataset {wildcards.dataset} --metrics {params.metrics}"
        " --variants {params.variants:q} --out {output} 2> {log}"
