rule finetune:
    """Visual encoder + recognition head (lgr, fc baseline, fc_cvlp, knn), one run per head."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        text_emb=up("embed_text", "text_embeddings.safetensors"),
        pretrain=up("pretrain", "pretrain", "model.pt"),
    output:
        ds_path("finetune", "{head}", "model.pt"),
    params:
        launch=job_launch("finetune"),
        cfg=params_json("data", "model", "finetune"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "finetune_{head}.log"),
    threads: job_threads("finetune")
    resources:
        **job_resources_of("finetune"),
    shell:
        "{params.launch}langtail finetune --params {params.cfg:q} --head {wildcards.head} --manifest {input.manifest}"
        " --text-emb {input.text_emb} --pretrain {input.pretrain} --out {output} 2> {log}"
