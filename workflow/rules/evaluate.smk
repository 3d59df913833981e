rule evaluate:
    """Top-1 overall / many / medium / few and per-class accuracy of one model."""
    input:
        unpack(stage_inputs("evaluate", "model", text_emb=("embed_text", "text_embeddings.safetensors"),
                            features=FEATURES)),
        manifest=up("longtail", "manifest.parquet"),
        checkpoint=eval_checkpoint,
    output:
        metrics=report(ds_path("eval", "{model}{rep}", "metrics.json"), caption=report_caption("eval_metrics"),
                       category="Evaluation", subcategory="{model}{rep}", labels=accuracy_labels("model")),
        per_class=report(ds_path("eval", "{model}{rep}", "per_class.parquet"), caption=report_caption("eval_per_class"),
                         category="Evaluation", subcategory="{model}{rep}",
                         labels={"model": "{model}{rep}", "table": "per class"}),
        skipped=ds_path("eval", "{model}{rep}", "skipped_images.parquet"),
    params:
        launch=job_launch("evaluate"),
        cfg=stage_params("evaluate"),
        out_dir=ds_path("eval", "{model}{rep}"),
        opts=input_opts("text_emb", "features"),
        cache=base_path("cache"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_{model}{rep}.log"),
    benchmark:
        ds_path("benchmarks", "evaluate_{model}{rep}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("evaluate")
    resources:
        **job_resources_of("evaluate"),
    shell:
        "{params.launch}langtail evaluate --params {params.cfg:q} --model {wildcards.model} --manifest {input.manifest}"
        " --checkpoint {input.checkpoint} {params.opts} --out-dir {params.out_dir} --cache-dir {params.cache} 2> {log}"
