rule longtail:
    """Long-tailed subset: manifest.parquet (+ images_<split>.npy for array datasets)."""
    output:
        ds_path("manifest.parquet"),
    params:
        cfg=stage_params("longtail"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "longtail.log"),
    resources:
        mem_mb=4000,
    shell:
        "langtail longtail --params {params.cfg:q} --out {output} 2> {log}"
