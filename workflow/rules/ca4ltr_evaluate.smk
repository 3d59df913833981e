rule ca4ltr_evaluate:
    """Top-1 overall / many / medium / few + per class of one CA4LTR run (same files as `evaluate`)."""
    input:
        unpack(stage_inputs("ca4ltr_evaluate", "source", anchors=("anchors", "anchors.parquet"),
                            captions=("captions", "captions.parquet"), features=TOKENS)),
        manifest=up("longtail", "manifest.parquet"),
        checkpoint=ds_path("ca4ltr", "{source}{rep}", "model.pt"),
    output:
        metrics=report(ds_path("eval", "ca4ltr_{source}{rep}", "metrics.json"), caption=report_caption("ca4ltr_metrics"),
                       category="Evaluation", subcategory="ca4ltr_{source}{rep}", labels=accuracy_labels("source")),
        per_class=report(ds_path("eval", "ca4ltr_{source}{rep}", "per_class.parquet"),
                         caption=report_caption("ca4ltr_per_class"), category="Evaluation",
                         subcategory="ca4ltr_{source}{rep}",
                         labels={"model": "ca4ltr_{source}{rep}", "table": "per class"}),
    wildcard_constraints:
        source="|".join(CA4LTR_SOURCES),
    params:
        launch=job_launch("evaluate"),
        cfg=stage_params("ca4ltr_evaluate"),
        cache=base_path("cache"),
        out_dir=ds_path("eval", "ca4ltr_{source}{rep}"),
        opts=input_opts("anchors", "captions", "features"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_ca4ltr_{source}{rep}.log"),
    benchmark:
        ds_path("benchmarks", "evaluate_ca4ltr_{source}{rep}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("evaluate")
    resources:
        **job_resources_of("evaluate"),
    shell:
        "{params.launch}langtail ca4ltr-evaluate --params {params.cfg:q} --manifest {input.manifest} --checkpoint {input.checkpoint}"
        " {params.opts} --cache-dir {params.cache} --out-dir {params.out_dir} 2> {log}"
