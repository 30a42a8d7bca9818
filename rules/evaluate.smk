rule score_pairs:
    """The reward pairs' log-probabilities under one model, computed once: its own reward accuracy reads
    them as the policy's, its children's as their reference's."""
    input:
        model=lambda wc: paths.variant_model(wc.model, wc.variant),
        data=lambda wc: paths.mixture(EVALUATION["reward"]["data"]),
    output:
        paths.pair_scores("{model}", "{variant}"),
    log:
        "logs/score_pairs/{model}/{variant}.log",
    benchmark:
        "benchmarks/score_pairs/{model}/{variant}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings("reward"),
    script:
        "../scripts/score_pairs.py"


rule evaluate:
    """One evaluation of one model variant: HellaSwag, GSM8K overlap, MCQA or reward accuracy."""
    input:
        unpack(evaluate_inputs),
    output:
        metrics=paths.metrics("{model}", "{variant}", "{task}"),
        records=paths.metrics("{model}", "{variant}", "{task}", ext="jsonl"),
    log:
        "logs/evaluate/{model}/{variant}/{task}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{variant}/{task}.tsv"
    conda:
        "../envs/evaluate.yaml"
    # two 1-thread evaluations side by side end no later than two of 2 threads in turn (measured), start-up included
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings(wc.task),
    script:
        "../scripts/evaluate.py"


rule evaluate_perplexity:
    """A task measured per form (perplexity, over the same fixed windows) of a variant, dense or quantized."""
    input:
        model=lambda wc: paths.variant_model(wc.model, wc.variant, wc.form),
        data=lambda wc: paths.mixture(EVALUATION[wc.task]["data"]),
    output:
        metrics=paths.metrics("{model}", "{variant}", "{task}", "{form}"),
        records=paths.metrics("{model}", "{variant}", "{task}", "{form}", "jsonl"),
    log:
        "logs/evaluate/{model}/{variant}/{task}-{form}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{variant}/{task}-{form}.tsv"
    wildcard_constraints:
        task=PER_FORM_TASKS,
    conda:
        "../envs/evaluate.yaml"
    # mostly start-up and file work: two such jobs side by side on 2 cores
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings(wc.task),
    script:
        "../scripts/evaluate.py"
