# CA4LTR (cross-modal attention), docs/ca4ltr.md: one run per text source in `ca4ltr.sources`;
# the "Pure" baseline of its study is the `fc` finetune run.
rule ca4ltr_finetune:
    """Train CA4LTR with one text source: results/<dataset>/ca4ltr/<source>/model.pt."""
    input:
        unpack(stage_inputs("ca4ltr_finetune", "source", anchors=("anchors", "anchors.parquet"),
                            captions=("captions", "captions.parquet"), pretrain=("pretrain", "pretrain", "model.pt"),
                            features=TOKENS)),
        manifest=up("longtail", "manifest.parquet"),
    output:
        ds_path("ca4ltr", "{source}{rep}", "model.pt"),
    wildcard_constraints:
        source="|".join(CA4LTR_SOURCES),
    params:
        # only what this run reads: e.g. label_templates does not rerun the caption run
        launch=job_launch("ca4ltr"),
        cfg=stage_params("ca4ltr_finetune", "source"),
        cache=base_path("cache"),
        opts=input_opts("anchors", "captions", "pretrain", "features"),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "ca4ltr_{source}{rep}.log"),
    benchmark:
        ds_path("benchmarks", "ca4ltr_{source}{rep}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("ca4ltr")
    resources:
        **job_resources_of("ca4ltr"),
    shell:
        "{params.launch}langtail ca4ltr-finetune --params {params.cfg:q} --source {wildcards.source} --manifest {input.manifest}"
        " {params.opts} --cache-dir {params.cache} --out {output} 2> {log}"
