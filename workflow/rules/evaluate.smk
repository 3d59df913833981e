rule evaluate:
    """Top-1 overall / many / medium / few and per-class accuracy of one model."""
    input:
        unpack(stage_inputs("evaluate", "model", text_emb=("embed_text", "text_embeddings.safetensors"))),
        manifest=up("longtail", "manifest.parquet"),
        checkpoint=eval_checkpoint,
    output:
        metrics=ds_path("eval", "{model}{rep}", "metrics.json"),
        per_class=ds_path("eval", "{model}{rep}", "per_class.parquet"),
        skipped=ds_path("eval", "{model}{rep}", "skipped_images.parquet"),
    params:
        cfg=stage_params("evaluate"),
        out_dir=ds_path("eval", "{model}{rep}"),
        opts=input_opts("text_emb"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_{model}{rep}.log"),
    resources:
        mem_mb=8000,
        gpu=gpu_count("evaluate"),
    shell:
        "langtail evaluate --params {params.cfg:q} --model {wildcards.model} --manifest {input.manifest}"
        " --checkpoint {input.checkpoint} {params.opts} --out-dir {params.out_dir} 2> {log}"
