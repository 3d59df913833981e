# Frozen-backbone image features (model.backbone_mode: frozen), docs/method.md "Frozen backbone":
# computed once per dataset from a content-keyed cache; the training and evaluation rules ask for
# image_features.safetensors (pooled) and the CA4LTR rules for image_tokens.safetensors (tokens)
# only under frozen, so the tokens are cached only when a CA4LTR job runs.
rule image_features:
    """Backbone outputs of every manifest image: pooled [N, F] or tokens [N, L, F] (+ K augmented views)."""
    input:
        manifest=up("longtail", "manifest.parquet"),
    output:
        ds_path("image_{kind}.safetensors"),
    wildcard_constraints:
        kind="features|tokens",
    params:
        launch=job_launch("anchors"),
        cfg=stage_params("image_features"),
        kind=lambda w: "pooled" if w.kind == "features" else "tokens",
        cache=base_path("cache"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "image_{kind}.log"),
    benchmark:
        ds_path("benchmarks", "image_{kind}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("anchors")
    resources:
        **job_resources_of("anchors"),
    shell:
        "{params.launch}langtail image-features --params {params.cfg:q} --kind {params.kind} --manifest {input.manifest}"
        " --cache-dir {params.cache} --out {output} 2> {log}"
