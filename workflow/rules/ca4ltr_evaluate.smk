rule ca4ltr_evaluate:
    """Top-1 overall / many / medium / few + per class of one CA4LTR run (same files as `evaluate`)."""
    input:
        unpack(stage_inputs("ca4ltr_evaluate", "source", anchors=("anchors", "anchors.parquet"),
                            captions=("captions", "captions.parquet"))),
        manifest=up("longtail", "manifest.parquet"),
        checkpoint=ds_path("ca4ltr", "{source}{rep}", "model.pt"),
    output:
        metrics=ds_path("eval", "ca4ltr_{source}{rep}", "metrics.json"),
        per_class=ds_path("eval", "ca4ltr_{source}{rep}", "per_class.parquet"),
    wildcard_constraints:
        source="|".join(CA4LTR_SOURCES),
    params:
        cfg=stage_params("ca4ltr_evaluate"),
        cache=base_path("cache"),
        out_dir=ds_path("eval", "ca4ltr_{source}{rep}"),
        opts=input_opts("anchors", "captions"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_ca4ltr_{source}{rep}.log"),
    resources:
        mem_mb=8000,
        gpu=gpu_count("evaluate"),
    shell:
        "langtail ca4ltr-evaluate --params {params.cfg:q} --manifest {input.manifest} --checkpoint {input.checkpoint}"
        " {params.opts} --cache-dir {params.cache} --out-dir {params.out_dir} 2> {log}"
