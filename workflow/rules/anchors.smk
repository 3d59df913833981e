rule anchors:
    """AnSS: score every sentence by L_lin against <= 50 images per class, keep the best M."""
    input:
        unpack(frozen_features),
        manifest=up("longtail", "manifest.parquet"),
        corpus=up("corpus", "corpus.parquet"),
        pretrain=up("pretrain", "pretrain", "model.pt"),
    output:
        ds_path("anchors.parquet"),
    params:
        launch=job_launch("anchors"),
        cfg=stage_params("anchors"),
        cache=base_path("cache"),
        opts=input_opts("features"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "anchors.log"),
    benchmark:
        ds_path("benchmarks", "anchors.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("anchors")
    resources:
        **job_resources_of("anchors"),
    shell:
        "{params.launch}langtail anchors --params {params.cfg:q} --manifest {input.manifest} --corpus {input.corpus}"
        " --pretrain {input.pretrain} --out {output} --cache-dir {params.cache} {params.opts} 2> {log}"
