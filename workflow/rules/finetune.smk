rule finetune:
    """Visual encoder + recognition head (lgr, fc baseline, fc_cvlp, knn), one run per head.
    Inputs per head (langtail.stages.finetune.inputs): fc reads neither anchors nor CVLP weights."""
    input:
        unpack(stage_inputs("finetune", "head", text_emb=("embed_text", "text_embeddings.safetensors"),
                            pretrain=("pretrain", "pretrain", "model.pt"), features=FEATURES)),
        manifest=up("longtail", "manifest.parquet"),
    output:
        model=ds_path("finetune", "{head}{rep}", "model.pt"),
        skipped=ds_path("finetune", "{head}{rep}", "skipped_images.parquet"),
        tb=directory(ds_path("finetune", "{head}{rep}", "tb")),  # TensorBoard event files, live
    params:
        launch=job_launch("finetune"),
        cfg=stage_params("finetune", "head"),
        opts=input_opts("text_emb", "pretrain", "features"),
        cache=base_path("cache"),  # text features (head_init: text reuses the encoded class prompts)
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "finetune_{head}{rep}.log"),
    benchmark:
        ds_path("benchmarks", "finetune_{head}{rep}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("finetune")
    resources:
        **job_resources_of("finetune"),
    shell:
        "{params.launch}langtail finetune --params {params.cfg:q} --head {wildcards.head} --manifest {input.manifest}"
        " {params.opts} --out {output.model} --track-dir {output.tb} --cache-dir {params.cache} 2> {log}"
