rule pretrain:
    """CVLP: class-wise contrastive pre-training (+ CLIP distillation when a teacher is set)."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        corpus=up("corpus", "corpus.parquet"),
    output:
        ds_path("pretrain", "model.pt"),
    params:
        launch=job_launch("pretrain"),
        cfg=params_json("data", "model", "pretrain"),
        cache=base_path("cache"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "pretrain.log"),
    threads: job_threads("pretrain")
    resources:
        **job_resources_of("pretrain"),
    shell:
        "{params.launch}langtail pretrain --params {params.cfg:q} --manifest {input.manifest} --corpus {input.corpus}"
        " --out {output} --cache-dir {params.cache} 2> {log}"
