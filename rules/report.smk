rule table1:
    """The paper's Table 1 (its rows as configured), each cell's standard error, the paper's published
    values beside it (table and figure), and the MCQA table."""
    input:
        table1_inputs(),
    output:
        table1=report(
            "results/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        stderr=report(
            "results/table1_stderr.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        mcqa=report(
            "results/mcqa.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        versus_paper=report(
            "results/table1_vs_paper.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        figure=report(
            "results/figures/table1_vs_paper.png",
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
            "results/quantization.csv",
            caption="../report/quantization.rst",
            category="Tables",
        ),
        figure=report(
            "results/figures/quantization.png",
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
            "results/qlora.csv",
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
        rows=qlora_rows(),
        forms=EXPORTS["precisions"] if qlora_exported() else [],
    script:
        "../scripts/qlora_table.py"
