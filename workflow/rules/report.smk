rule report:
    """results/<dataset>/report.md with tables, corpus statistics and PNG figures (figures/report/)."""
    input:
        unpack(report_inputs),
    output:
        report=report(ds_path("report.md"), caption=report_caption("report_md"), category="Report",
                      subcategory="report.md", labels={"dataset": "{dataset}", "file": "report.md"}),
        figures=report(directory(ds_path("figures", "report")), patterns=["{figure}.png"],
                       caption=report_caption("report_figures"), category="Report", subcategory="figures",
                       labels={"dataset": "{dataset}", "figure": "{figure}"}),
    params:
        cfg=stage_params("report"),
        evals=lambda w, input: " ".join(os.path.dirname(f) for f in input.metrics),
        captions=input_opts("captions"),
        skipped=lambda w, input: " ".join(f"{lab}={p}" for lab, p in zip(skip_labels(w), input.skipped)),
        curves=lambda w, input: " ".join(f"{lab}={p}" for lab, p in zip(curve_labels(w), input.checkpoints)),
        seeds=lambda w, input: " ".join(f"{h}{r}={p}" for (r, h), p in zip(
            [(r, h) for r in seed_reps(w)[1:] for h in cfg(w.dataset).finetune.heads], input.seed_metrics)),
        configs=CONFIG_FILE_OPTS,
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "report.log"),
    benchmark:
        ds_path("benchmarks", "report.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail report --params {params.cfg:q} --dataset {wildcards.dataset} --manifest {input.manifest}"
        " --eval {params.evals} --skipped {params.skipped} --curves {params.curves} --seed-metrics {params.seeds} --corpus-stats {input.corpus_stats} --anchors {input.anchors} {params.captions}"
        " --out {output.report} {params.configs} 2> {log}"
