rule finetune:
    """Visual encoder + recognition head (lgr, fc baseline, fc_cvlp, knn), one run per head."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        text_emb=up("embed_text", "text_embeddings.safetensors"),
        pretrain=up("pretrain", "pretrain", "model.pt"),
    output:
        model=ds_path("finetune", "{head}", "model.pt"),
        skipped=ds_path("finetune", "{head}", "skipped_images.parquet"),
    params:
        cfg=params_json("data", "model", "finetune"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "finetune_{head}.log"),
    threads: 2
    resources:
        mem_mb=16000,
        gpu=gpu_count("finetune"),
    shell:
        "langtail finetune --params {params.cfg:q} --head {wildcards.head} --manifest {input.manifest}"
        " --text-emb {input.text_emb} --pretrain {input.pretrain} --out {output.model} 2> {log}"
