rule corpus:
    """Class-level text: Wikipedia pages (cached crawl), CLIP prompts, descriptions, captions."""
    input:
        unpack(corpus_inputs),
        overrides=lambda w: cfg(w.dataset).corpus.overrides_file or [],  # editing it reruns the corpus
    output:
        corpus=ds_path("corpus.parquet"),
        stats=ds_path("corpus_stats.parquet"),
    params:
        cfg=stage_params("corpus"),
        cache=base_path("wiki_cache"),
        captions=lambda w, input: f"--captions {input.captions}" if "captions" in input.keys() else "",
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "corpus.log"),
    benchmark:
        ds_path("benchmarks", "corpus.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("corpus")
    resources:
        **job_resources_of("corpus"),
    shell:
        "langtail corpus --params {params.cfg:q} --out {output.corpus} --stats {output.stats}"
        " --cache-dir {params.cache} {params.captions} 2> {log}"
