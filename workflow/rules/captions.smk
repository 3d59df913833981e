rule captions:
    """BLIP-2 captions of the manifest's images (an empty table when captions.enabled is false)."""
    input:
        manifest=up("longtail", "manifest.parquet"),
    output:
        ds_path("captions.parquet"),
    params:
        launch=job_launch("captions"),
        cfg=stage_params("captions"),
        shards=ds_path("captions_shards"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "captions.log"),
    benchmark:
        ds_path("benchmarks", "captions.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("captions")
    resources:
        **job_resources_of("captions"),
    shell:
        "{params.launch}langtail captions --params {params.cfg:q} --manifest {input.manifest} --out {output}"
        " --shard-dir {params.shards} 2> {log}"
