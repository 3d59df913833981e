rule embed_text:
    """Anchor-sentence embeddings [C, M, D], encoded once with the frozen linguistic encoder."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        anchors=up("anchors", "anchors.parquet"),
        corpus=up("corpus", "corpus.parquet"),
        pretrain=up("pretrain", "pretrain", "model.pt"),
    output:
        ds_path("text_embeddings.safetensors"),
    params:
        cfg=stage_params("embed_text"),
        cache=base_path("cache"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "embed_text.log"),
    benchmark:
        ds_path("benchmarks", "embed_text.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("embed_text")
    resources:
        **job_resources_of("embed_text"),
    shell:
        "langtail embed-text --params {params.cfg:q} --manifest {input.manifest} --anchors {input.anchors}"
        " --corpus {input.corpus} --pretrain {input.pretrain} --out {output} --cache-dir {params.cache} 2> {log}"
