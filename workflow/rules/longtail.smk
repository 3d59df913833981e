rule longtail:
    """Long-tailed subset: manifest.parquet (+ images_<split>.npy for array datasets)."""
    output:
        ds_path("manifest.parquet"),
    params:
        cfg=params_json("data"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "longtail.log"),
    threads: job_threads("longtail")
    resources:
        **job_resources_of("longtail"),
    shell:
        "langtail longtail --params {params.cfg:q} --out {output} 2> {log}"
