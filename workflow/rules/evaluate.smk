rule evaluate:
    """Top-1 overall / many / medium / few and per-class accuracy of one model."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        checkpoint=eval_checkpoint,
        text_emb=up("embed_text", "text_embeddings.safetensors"),
    output:
        metrics=ds_path("eval", "{model}", "metrics.json"),
        per_class=ds_path("eval", "{model}", "per_class.parquet"),
    params:
        launch=job_launch("evaluate"),
        cfg=params_json("data", "finetune", "evaluate"),
        out_dir=ds_path("eval", "{model}"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_{model}.log"),
    threads: job_threads("evaluate")
    resources:
        **job_resources_of("evaluate"),
    shell:
        "{params.launch}langtail evaluate --params {params.cfg:q} --model {wildcards.model} --manifest {input.manifest}"
        " --checkpoint {input.checkpoint} --text-emb {input.text_emb} --out-dir {params.out_dir} 2> {log}"
