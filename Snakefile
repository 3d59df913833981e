# langtail workflow: snakemake --cores 2 results/demo/report.md
# Stages: corpus -> captions -> longtail -> pretrain -> anchors -> embed_text -> finetune -> evaluate -> report
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


# Snakemake's browsable report: snakemake --report report.zip results/<dataset>/report.md
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/report_marks.smk"
include: "workflow/rules/longtail.smk"
include: "workflow/rules/captions.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/image_features.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/anchors.smk"
include: "workflow/rules/embed_text.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ca4ltr_finetune.smk"
include: "workflow/rules/ca4ltr_evaluate.smk"
include: "workflow/rules/text_quality.smk"
include: "workflow/rules/ablations.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/demo/report.md",
