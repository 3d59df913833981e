rule longtail:
    """Long-tailed subset: manifest.parquet + arrays/ (images_<split>.npy for array datasets, else empty)."""
    output:
        manifest=ds_path("manifest.parquet"),
        arrays=directory(ds_path("arrays")),
    params:
        cfg=stage_params("longtail"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "longtail.log"),
    benchmark:
        ds_path("benchmarks", "longtail.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("longtail")
    resources:
        **job_resources_of("longtail"),
    shell:
        "langtail longtail --params {params.cfg:q} --out {output.manifest} 2> {log}"
