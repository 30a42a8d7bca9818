rule score_pairs:
    """The reward pairs' log-probabilities under one model, computed once: its own reward accuracy reads
    them as the policy's, its children's as their reference's."""
    input:
        model=lambda wc: f"{model_dir(wc.model, wc.variant)}/manifest.json",
        data=lambda wc: f"results/mixtures/{EVALUATION['reward']['data']}.json",
    output:
        "results/metrics/{model}/{variant}/pair_scores.json",
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
        metrics="results/metrics/{model}/{variant}/{task}.csv",
        records="results/metrics/{model}/{variant}/{task}.jsonl",
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
    """Perplexity of a variant, dense or quantized, over the same fixed windows."""
    input:
        model=perplexity_model,
        data=lambda wc: f"results/mixtures/{EVALUATION['perplexity']['data']}.json",
    output:
        metrics="results/metrics/{model}/{variant}/perplexity-{form}.csv",
        records="results/metrics/{model}/{variant}/perplexity-{form}.jsonl",
    log:
        "logs/evaluate/{model}/{variant}/perplexity-{form}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{variant}/perplexity-{form}.tsv"
    conda:
        "../envs/evaluate.yaml"
    # mostly start-up and file work: two such jobs side by side on 2 cores
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings("perplexity"),
        task="perplexity",
    script:
        "../scripts/evaluate.py"
