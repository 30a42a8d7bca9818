rule table1:
    """The paper's Table 1 (its rows as configured), each cell's standard error, the paper's published
    values beside it (table and figure), and the MCQA table."""
    input:
        table1_inputs(),
    output:
        table1=report(
            paths.table("table1"),
            caption="../report/table1.rst",
            category="Tables",
        ),
        stderr=report(
            paths.table("table1_stderr"),
            caption="../report/table1.rst",
            category="Tables",
        ),
        mcqa=report(
            paths.table("mcqa"),
            caption="../report/table1.rst",
            category="Tables",
        ),
        versus_paper=report(
            paths.table("table1_vs_paper"),
            caption="../report/table1.rst",
            category="Tables",
        ),
        figure=report(
            paths.figure("table1_vs_paper"),
            caption="../report/table1.rst",
            category="Figures",
        ),
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/table1.tsv"
    conda:
        "../envs/report.yaml"
    params:
        rows=TABLE1,
        models=MODELS,
    script:
        "../scripts/table1.py"


rule quantization:
    """Size on disk and perplexity of each exported variant, dense against quantized."""
    input:
        **quantization_inputs(),
    output:
        table=report(
            paths.table("quantization"),
            caption="../report/quantization.rst",
            category="Tables",
        ),
        figure=report(
            paths.figure("quantization"),
            caption="../report/quantization.rst",
            category="Figures",
        ),
    log:
        "logs/quantization.log",
    benchmark:
        "benchmarks/quantization.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/quantization.py"


rule figures:
    """The appendix figures from the training runs' log histories."""
    input:
        list(histories().values()),
    output:
        **{
            name: report(path, caption="../report/figures.rst", category="Figures")
            for name, path in figure_outputs().items()
        },
    log:
        "logs/figures.log",
    benchmark:
        "benchmarks/figures.tsv"
    conda:
        "../envs/report.yaml"
    params:
        runs=list(histories()),
        variants=VARIANTS,
        hyperparameters=HYPERPARAMETERS,
    script:
        "../scripts/figures.py"


rule qlora_table:
    """The QLoRA variants evaluated as Table 1's rows are, with MCQA and perplexity, in their own table."""
    input:
        qlora_inputs(),
    output:
        report(
            paths.table("qlora"),
            caption="../report/table1.rst",
            category="Tables",
        ),
    log:
        "logs/qlora_table.log",
    benchmark:
        "benchmarks/qlora_table.tsv"
    conda:
        "../envs/report.yaml"
    params:
        rows=study.qlora_rows(config),
        forms=EXPORTS["precisions"] if study.qlora_exported(config) else [],
    script:
        "../scripts/qlora_table.py"
