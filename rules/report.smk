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
        paths.log("table1"),
    benchmark:
        paths.benchmark("table1")
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
        paths.log("quantization"),
    benchmark:
        paths.benchmark("quantization")
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
        paths.log("figures"),
    benchmark:
        paths.benchmark("figures")
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
        paths.log("qlora_table"),
    benchmark:
        paths.benchmark("qlora_table")
    conda:
        "../envs/report.yaml"
    params:
        rows=study.qlora_rows(config),
        formats=EXPORTS["formats"] if study.qlora_exported(config) else [],
    script:
        "../scripts/qlora_table.py"


rule study_warnings:
    """What the config asks that is likely not meant (warmup past a run's steps), what the mixtures' draws
    gave short of what the config asked or the study needs, and what max_length cut of each run's records
    (zephyr.model.truncation), in one table."""
    input:
        mixtures=[paths.mixture(m, "warnings.csv") for m in MIXTURES],
        runs=[paths.adapter(m, v, "summary.json") for m, v in study.trained(config)],
    output:
        report(
            paths.table("warnings"),
            caption="../report/warnings.rst",
            category="Warnings",
        ),
    log:
        paths.log("study_warnings"),
    benchmark:
        paths.benchmark("study_warnings")
    conda:
        "../envs/report.yaml"
    params:
        config_warnings=zconfig.config_warnings(config),
        run_mixtures=[VARIANTS[v]["data"] for m, v in study.trained(config)],
    script:
        "../scripts/study_warnings.py"


rule findings:
    """The report's findings beside what the study measured (claim, place, measurement, stderr,
    verdict), and each DPO run's validation reward accuracy beside the report's."""
    input:
        paths.findings_inputs(),
    output:
        findings=report(
            paths.table("findings"),
            caption="../report/findings.rst",
            category="Findings",
        ),
        dpo_validation=report(
            paths.table("dpo_validation"),
            caption="../report/findings.rst",
            category="Findings",
        ),
    log:
        paths.log("findings"),
    benchmark:
        paths.benchmark("findings")
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/findings.py"


rule claims:
    """The report's claims over every draw of the study (`draws`): each row with its draws' differences and
    a standard error from items and seeds, then each claim once with its verdict and how many rows and draws
    agree. Draws 2..N are read from their own finished trees (their study.json proves them current).
    """
    input:
        paths.findings_inputs(),
        [zpaths.Layout(c).study_file() for c in OTHER_DRAWS],
    output:
        claims=report(
            paths.table("claims"),
            caption="../report/claims.rst",
            category="Findings",
        ),
        rows=report(
            paths.table("claim_rows"),
            caption="../report/claims.rst",
            category="Findings",
        ),
    log:
        paths.log("claims"),
    benchmark:
        paths.benchmark("claims")
    conda:
        "../envs/evaluate.yaml"
    params:
        draws=OTHER_DRAWS,
    script:
        "../scripts/claims.py"


rule study_record:
    """The study's record (`study.json`: its name, config files and the config's fingerprint), written
    once every final output is: what `make studies` lists and what readers of results check.
    """
    input:
        final_outputs(),
    output:
        paths.study_file(),
    log:
        paths.log("study_record"),
    conda:
        "../envs/report.yaml"
    params:
        config=config,
        # relative to the working directory: the same study read from a moved or copied folder is current
        config_files=[os.path.relpath(f.path) for f in CONFIG_FILES],
        fingerprint=zpaths.fingerprint(config),
    script:
        "../scripts/study_record.py"
