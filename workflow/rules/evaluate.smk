rule evaluate:
    """Top-1 overall / many / medium / few and per-class accuracy of one model."""
    input:
        unpack(stage_inputs("evaluate", "model", text_emb=("embed_text", "text_embeddings.safetensors"))),
        manifest=up("longtail", "manifest.parquet"),
        checkpoint=eval_checkpoint,
    output:
        metrics=ds_path("eval", "{model}", "metrics.json"),
        per_class=ds_path("eval", "{model}", "per_class.parquet"),
        skipped=ds_path("eval", "{model}", "skipped_images.parquet"),
    params:
        cfg=stage_params("evaluate"),
        out_dir=ds_path("eval", "{model}"),
        opts=input_opts("text_emb"),
        cache=base_path("cache"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_{model}.log"),
    benchmark:
        ds_path("benchmarks", "evaluate_{model}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    resources:
        mem_mb=8000,
        gpu=gpu_count("evaluate"),
    shell:
        "langtail evaluate --params {params.cfg:q} --model {wildcards.model} --manifest {input.manifest}"
        " --checkpoint {input.checkpoint} {params.opts} --out-dir {params.out_dir} --cache-dir {params.cache} 2> {log}"
