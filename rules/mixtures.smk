rule draw_mixture:
    """Draw a sampled mixture (or held-out set) from its component datasets' records."""
    input:
        unpack(mixture_inputs),
    output:
        train=paths.mixture("{mixture}"),
        validation=paths.mixture("{mixture}", "validation.json"),
        stats=paths.mixture("{mixture}", "stats.csv"),
        warnings=paths.mixture("{mixture}", "warnings.csv"),
        manifest=paths.mixture("{mixture}", "manifest.json"),
    log:
        paths.log("draw_mixture/{mixture}"),
    benchmark:
        paths.benchmark("draw_mixture/{mixture}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=MEMORY["data"],
        runtime=30,
    params:
        spec=lambda wc: MIXTURES[wc.mixture],
        least=lambda wc: study.least_items(EVALUATION, wc.mixture),
    script:
        "../scripts/draw_mixture.py"


rule check_leakage:
    """No held-out item in a training mixture, however the config is written: every evaluation set and
    validation split against the training mixtures it must not share an item with, by normalized prompt.
    Every training job waits for it."""
    input:
        leakage_inputs(),
    output:
        paths.leakage(),
    log:
        paths.log("check_leakage"),
    benchmark:
        paths.benchmark("check_leakage")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=MEMORY["data"],
        runtime=30,
    params:
        plan=zmixtures.leakage_plan(config),
        parts=leakage_parts(),
    script:
        "../scripts/check_leakage.py"


rule dataset_info:
    """LlamaFactory's dataset_info.json: each non-empty file of a trainable mixture, with the columns its records carry."""
    input:
        [paths.mixture(m) for m in MIXTURES],
        [paths.mixture(m, "validation.json") for m in llamafactory_mixtures()],
    output:
        paths.dataset_info(),
    log:
        paths.log("dataset_info"),
    benchmark:
        paths.benchmark("dataset_info")
    conda:
        "../envs/data.yaml"
    params:
        tasks=llamafactory_mixtures(),
    script:
        "../scripts/dataset_info.py"
