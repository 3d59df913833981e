# Grid sweeps (config `sweeps:`, langtail.sweeps): cell i of sweep S is the variant S_i, built by the
# usual rules under results/<dataset>+S_i/ (reusing every upstream artifact it does not change; on a
# cluster each cell's jobs are independent); this rule tables them.
rule sweep_report:
    """results/<dataset>/sweeps/<sweep>.md: every cell, mean +/- std over finetune.seeds, best on val."""
    input:
        unpack(sweep_inputs),
    output:
        ds_path("sweeps", "{sweep}.md"),
    wildcard_constraints:
        sweep="[A-Za-z0-9_]+",
    params:
        cfg=stage_params("sweep_report"),
        grid=lambda w: json.dumps(sweep_grid(w)),
        metrics=lambda w, input: " ".join(f"{k.replace('__', ':', 1)}={v}" for k, v in input.items()),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "sweep_{sweep}.log"),
    benchmark:
        ds_path("benchmarks", "sweep_{sweep}.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail sweep-report --params {params.cfg:q} --dataset {wildcards.dataset} --sweep {wildcards.sweep}"
        " --grid {params.grid:q} --metrics {params.metrics} --out {output} 2> {log}"
