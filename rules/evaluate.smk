rule score_pairs:
    """The pairs' log-probabilities under one model, computed once for the task computed from them (reward
    accuracy): the model's own evaluation reads them as the policy's, its children's as their reference's.
    """
    input:
        model=lambda wc: paths.variant_model(wc.model, wc.variant),
        data=lambda wc: paths.mixture(EVALUATION[PAIR_SCORES_TASK]["data"]),
    output:
        paths.pair_scores("{model}", "{variant}"),
    log:
        paths.log("score_pairs/{model}/{variant}"),
    benchmark:
        paths.benchmark("score_pairs/{model}/{variant}")
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=MEMORY["inference"],
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings(PAIR_SCORES_TASK),
    script:
        "../scripts/score_pairs.py"


rule evaluate:
    """One evaluation of one model variant on a task of the registry (HellaSwag, GSM8K overlap, MCQA,
    reward accuracy...), measured on its dense weights."""
    input:
        unpack(evaluate_inputs),
    output:
        metrics=paths.metrics("{model}", "{variant}", "{task}"),
        records=paths.metrics("{model}", "{variant}", "{task}", ext="jsonl"),
    log:
        paths.log("evaluate/{model}/{variant}/{task}"),
    benchmark:
        paths.benchmark("evaluate/{model}/{variant}/{task}")
    conda:
        "../envs/evaluate.yaml"
    # two 1-thread evaluations side by side end no later than two of 2 threads in turn (measured), start-up included
    threads: 1
    resources:
        mem_mb=MEMORY["inference"],
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings(wc.task),
    script:
        "../scripts/evaluate.py"


rule evaluate_perplexity:
    """A task measured per format (perplexity, over the same fixed windows) of a variant, dense or quantized."""
    input:
        model=lambda wc: paths.variant_model(wc.model, wc.variant, wc.format),
        data=lambda wc: paths.mixture(EVALUATION[wc.task]["data"]),
    output:
        metrics=paths.metrics("{model}", "{variant}", "{task}", "{format}"),
        records=paths.metrics("{model}", "{variant}", "{task}", "{format}", "jsonl"),
    log:
        paths.log("evaluate/{model}/{variant}/{task}-{format}"),
    benchmark:
        paths.benchmark("evaluate/{model}/{variant}/{task}-{format}")
    wildcard_constraints:
        task=PER_FORMAT_TASKS,
    conda:
        "../envs/evaluate.yaml"
    # mostly start-up and file work: two such jobs side by side on 2 cores
    threads: 1
    resources:
        mem_mb=MEMORY["inference"],
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings(wc.task),
    script:
        "../scripts/evaluate.py"


rule evaluate_as_trained:
    """A QLoRA variant's evaluation as it was trained: its parent's weights quantized as the variant's
    `qlora` says (as training loaded them), its adapter on top, unmerged; every task of the QLoRA table.
    """
    input:
        model=lambda wc: paths.variant_model(wc.model, _variant(wc)["parent"]),
        adapter=lambda wc: paths.adapter(wc.model, wc.variant, "adapter_config.json"),
        data=lambda wc: paths.mixture(EVALUATION[wc.task]["data"]),
    output:
        metrics=paths.metrics("{model}", "{variant}", "{task}", study.AS_TRAINED),
        records=paths.metrics(
            "{model}", "{variant}", "{task}", study.AS_TRAINED, "jsonl"
        ),
    log:
        paths.log(f"evaluate/{{model}}/{{variant}}/{{task}}-{study.AS_TRAINED}"),
    benchmark:
        paths.benchmark(f"evaluate/{{model}}/{{variant}}/{{task}}-{study.AS_TRAINED}")
    wildcard_constraints:
        task=QLORA_TASKS,
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=MEMORY["inference"],
        runtime=120,
        gpu=INFERENCE_GPUS,
    params:
        settings=lambda wc: eval_settings(wc.task),
        qlora=lambda wc: _variant(wc)["qlora"],
    script:
        "../scripts/evaluate.py"
