rule pretrain:
    """CVLP: class-wise contrastive pre-training (+ CLIP distillation when a teacher is set)."""
    input:
        unpack(frozen_features),
        manifest=up("longtail", "manifest.parquet"),
        corpus=up("corpus", "corpus.parquet"),
    output:
        model=ds_path("pretrain", "model.pt"),
        skipped=ds_path("pretrain", "skipped_images.parquet"),
    params:
        launch=job_launch("pretrain"),
        cfg=stage_params("pretrain"),
        cache=base_path("cache"),
        opts=input_opts("features"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "pretrain.log"),
    benchmark:
        ds_path("benchmarks", "pretrain.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("pretrain")
    resources:
        **job_resources_of("pretrain"),
    shell:
        "{params.launch}langtail pretrain --params {params.cfg:q} --manifest {input.manifest} --corpus {input.corpus}"
        " --out {output.model} --cache-dir {params.cache} {params.opts} 2> {log}"
