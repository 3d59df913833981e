# CA4LTR (cross-modal attention) and its text-quality study; docs/ca4ltr.md.
# One run per text source in `ca4ltr.sources`; the "Pure" baseline is the `fc` finetune run.
# Helpers (which inputs a source needs, per-run params) live in langtail.train.ca4ltr.
from langtail.text_sources import SOURCES as CA4LTR_SOURCES
from langtail.train import ca4ltr as ca4ltr_stage


rule ca4ltr_finetune:
    """Train CA4LTR with one text source: results/<dataset>/ca4ltr/<source>/model.pt."""
    input:
        unpack(lambda w: {k: artifact(w.dataset, *v)
                          for k, v in ca4ltr_stage.rule_inputs(cfg(w.dataset), w.source).items()}),
    output:
        ds_path("ca4ltr", "{source}", "model.pt"),
    wildcard_constraints:
        source="|".join(CA4LTR_SOURCES),
    params:
        launch=job_launch("ca4ltr"),
        # only what this run depends on: e.g. label_templates does not rerun the caption run
        cfg=lambda w: json.dumps(ca4ltr_stage.run_params(cfg(w.dataset), w.source), sort_keys=True),
        cache=base_path("cache"),
        opts=lambda w, input: ca4ltr_stage.cli_options(input),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "ca4ltr_{source}.log"),
    threads: job_threads("ca4ltr")
    resources:
        **job_resources_of("ca4ltr"),
    shell:
        "{params.launch}langtail ca4ltr-train --params {params.cfg:q} --source {wildcards.source} --manifest {input.manifest}"
        " {params.opts} --cache-dir {params.cache} --out {output} 2> {log}"


rule ca4ltr_evaluate:
    """Top-1 overall / many / medium / few + per class of one CA4LTR run (same files as `evaluate`)."""
    input:
        unpack(lambda w: {k: artifact(w.dataset, *v)
                          for k, v in ca4ltr_stage.rule_inputs(cfg(w.dataset), w.source, train=False).items()}),
        checkpoint=ds_path("ca4ltr", "{source}", "model.pt"),
    output:
        metrics=ds_path("eval", "ca4ltr_{source}", "metrics.json"),
        per_class=ds_path("eval", "ca4ltr_{source}", "per_class.parquet"),
    wildcard_constraints:
        source="|".join(CA4LTR_SOURCES),
    params:
        launch=job_launch("evaluate"),
        cfg=lambda w: json.dumps(ca4ltr_stage.run_params(cfg(w.dataset), w.source, "evaluate"), sort_keys=True),
        cache=base_path("cache"),
        out_dir=ds_path("eval", "ca4ltr_{source}"),
        opts=lambda w, input: ca4ltr_stage.cli_options(input),
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "evaluate_ca4ltr_{source}.log"),
    threads: job_threads("evaluate")
    resources:
        **job_resources_of("evaluate"),
    shell:
        "{params.launch}langtail ca4ltr-evaluate --params {params.cfg:q} --manifest {input.manifest} --checkpoint {input.checkpoint}"
        " {params.opts} --cache-dir {params.cache} --out-dir {params.out_dir} 2> {log}"


rule text_quality:
    """CA4LTR text-quality study: table (Pure, VL-LTR LGR, CA4LTR per source) + head/tail chart."""
    input:
        manifest=up("longtail", "manifest.parquet"),
        pure=up("evaluate", "eval", "fc", "metrics.json"),
        pure_per_class=up("evaluate", "eval", "fc", "per_class.parquet"),
        lgr=lambda w: [artifact(w.dataset, "evaluate", "eval", "lgr", "metrics.json")]
        if "lgr" in cfg(w.dataset).finetune.heads else [],
        ca4ltr=lambda w: [os.path.join(RESULTS, w.dataset, "eval", f"ca4ltr_{s}", "metrics.json")
                          for s in cfg(w.dataset).ca4ltr.sources],
    output:
        report=ds_path("text_quality.md"),
        figure=ds_path("figures", "text_quality_per_class.png"),
    params:
        cfg=params_json("data", "model", "pretrain", "anchors", "finetune", "ca4ltr", "evaluate"),
        results=ds_path(),
        pure=lambda w: artifact(w.dataset, "evaluate", "eval", "fc"),
        lgr=lambda w: f"--lgr-dir {artifact(w.dataset, 'evaluate', 'eval', 'lgr')}"
        if "lgr" in cfg(w.dataset).finetune.heads else "",
        configs=CONFIG_FILE_OPTS,
    conda:
        "../envs/langtail.yaml"
    log:
        ds_path("logs", "text_quality.log"),
    threads: job_threads("report")
    resources:
        **job_resources_of("report"),
    shell:
        "langtail ca4ltr-report --params {params.cfg:q} --dataset {wildcards.dataset} --results-dir {params.results}"
        " --manifest {input.manifest} --pure-dir {params.pure} {params.lgr} --out {output.report} {params.configs} 2> {log}"
