rule draw_mixture:
    """Draw a sampled mixture (or held-out set) from its component datasets' records."""
    input:
        unpack(mixture_inputs),
    output:
        train=paths.mixture("{mixture}"),
        validation=paths.mixture("{mixture}", "validation.json"),
        stats=paths.mixture("{mixture}", "stats.csv"),
        warnings=paths.mixture("{mixture}", "warnings.csv"),
    log:
        "logs/draw_mixture/{mixture}.log",
    benchmark:
        "benchmarks/draw_mixture/{mixture}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        spec=lambda wc: MIXTURES[wc.mixture],
        least=lambda wc: study.least_items(EVALUATION, wc.mixture),
    script:
        "../scripts/draw_mixture.py"


rule dataset_info:
    """LlamaFactory's dataset_info.json: each non-empty file of a trainable mixture, with the columns its records carry."""
    input:
        [paths.mixture(m) for m in MIXTURES],
        [paths.mixture(m, "validation.json") for m in llamafactory_mixtures()],
    output:
        paths.dataset_info(),
    log:
        "logs/dataset_info.log",
    benchmark:
        "benchmarks/dataset_info.tsv"
    conda:
        "../envs/data.yaml"
    params:
        tasks=llamafactory_mixtures(),
    script:
        "../scripts/dataset_info.py"


rule mixture_warnings:
    """What the mixtures' draws gave short of what the config asked or the study needs, in one table."""
    input:
        [paths.mixture(m, "warnings.csv") for m in MIXTURES],
    output:
        report(
            paths.table("warnings"),
            caption="../report/warnings.rst",
            category="Warnings",
        ),
    log:
        "logs/mixture_warnings.log",
    benchmark:
        "benchmarks/mixture_warnings.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/mixture_warnings.py"
