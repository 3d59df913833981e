rule text_quality:
    """CA4LTR text-quality study: table (Pure, VL-LTR LGR, CA4LTR per source) + head/tail chart."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        pure=lambda w: os.path.join(eval_dir(w.dataset, "fc"), "metrics.json"),
        pure_per_class=lambda w: os.path.join(eval_dir(w.dataset, "fc"), "per_class.parquet"),
        lgr=lambda w: [os.path.join(eval_dir(w.dataset, "lgr"), "metrics.json")]
        if "lgr" in cfg(w.dataset).finetune.heads else [],
        # the LIFT recipe's row (results/<dataset>+lift/), when report.ablations lists it
        lift=lambda w: [os.path.join(eval_dir(f"{w.dataset}+lift", "fc_cvlp"), "metrics.json")]
        if "lift" in cfg(w.dataset).report.ablations else [],
        ca4ltr=lambda w: [os.path.join(RESULTS, w.dataset, "eval", f"ca4ltr_{s}", f)
                          for s in cfg(w.dataset).ca4ltr.sources for f in ("metrics.json", "per_class.parquet")],
        # training checkpoints (their extra.history: the training-curves figure), Pure first
        checkpoints=lambda w: [artifact(w.dataset, "finetune", "finetune", "fc", "model.pt")]
        + [os.path.join(RESULTS, w.dataset, "ca4ltr", s, "model.pt") for s in cfg(w.dataset).ca4ltr.sources],
        # the other seeds of finetune.seeds (Pure and every source): mean +/- std
        seed_metrics=lambda w: [os.path.join(eval_dir(w.dataset, "fc", r), "metrics.json") for r in seed_reps(w)[1:]]
        + [os.path.join(RESULTS, w.dataset, "eval", f"ca4ltr_{s}{r}", "metrics.json")
           for r in seed_reps(w)[1:] for s in cfg(w.dataset).ca4ltr.sources],
    output:
        report=report(ds_path("text_quality.md"), caption=report_caption("text_quality"),
                      category="CA4LTR text quality", labels={"dataset": "{dataset}", "file": "text_quality.md"}),
        figure=report(ds_path("figures", "text_quality_per_class.png"), caption=report_caption("text_quality_figure"),
                      category="CA4LTR text quality", labels={"dataset": "{dataset}", "figure": "text_quality_per_class"}),
        curves=report(ds_path("figures", "ca4ltr_training_curves.png"), caption=report_caption("text_quality_figure"),
                      category="CA4LTR text quality", labels={"dataset": "{dataset}", "figure": "ca4ltr_training_curves"}),
    params:
        cfg=stage_params("text_quality"),
        pure=lambda w, input: os.path.dirname(input.pure),
        lgr=lambda w, input: f"--lgr {os.path.dirname(input.lgr[0])}" if input.lgr else "",
        lift=lambda w, input: f"--lift {os.path.dirname(input.lift[0])}" if input.lift else "",
        ca4ltr=lambda w, input: " ".join(sorted({os.path.dirname(f) for f in input.ca4ltr})),
        curves=lambda w, input: " ".join(f"{lab}={p}" for lab, p in zip(
            ["finetune/fc"] + [f"ca4ltr/{s}" for s in cfg(w.dataset).ca4ltr.sources], input.checkpoints)),
        seeds=lambda w, input: " ".join(f"{m}{r}={p}" for (m, r), p in zip(
            [("fc", r) for r in seed_reps(w)[1:]]
            + [(f"ca4ltr_{s}", r) for r in seed_reps(w)[1:] for s in cfg(w.dataset).ca4ltr.sources],
            input.seed_metrics)),
        configs=CONFIG_FILE_OPTS,
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "text_quality.log"),
    benchmark:
        ds_path("benchmarks", "text_quality.tsv"),  # Snakemake: s, max_rss (MB), io, cpu_time per job
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail text-quality --params {params.cfg:q} --dataset {wildcards.dataset} --manifest {input.manifest}"
        " --pure {params.pure} {params.lgr} {params.lift} --ca4ltr {params.ca4ltr} --curves {params.curves} --seed-metrics {params.seeds} --out {output.report} {params.configs} 2> {log}"
