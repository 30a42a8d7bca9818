rule train_adapter:
    """LoRA SFT or DPO of a variant on its parent; checkpoints outside the outputs, so a rerun resumes."""
    input:
        unpack(train_inputs),
    output:
        adapter=paths.adapter("{model}", "{variant}", "adapter_config.json"),
        history=paths.adapter("{model}", "{variant}", "log_history.csv"),
        summary=paths.adapter("{model}", "{variant}", "summary.json"),
        validation_items=paths.adapter("{model}", "{variant}", zpaths.VALIDATION_ITEMS),
    log:
        paths.log("train_adapter/{model}/{variant}"),
    benchmark:
        paths.benchmark("train_adapter/{model}/{variant}")
    # the chain fetch → SFT → merge → DPO → merge → evaluation is the run's critical path: its jobs go
    # first whenever they are ready, and evaluations fill the cores around them
    priority: chain_priority
    conda:
        "../envs/train.yaml"
    # One thread (more with --set-threads train_adapter=N). Measured on 2 cores (float32, AVX2 kernels):
    # a second thread trains SFT 1.45x and DPO 1.6x faster, so one thread costs 21-28% fewer core-seconds;
    # and a 2-thread job waits until both cores are free at once, which a stream of 1-thread evaluations
    # never leaves: M2-DS's training started 15 minutes after its parent was merged, priority or not.
    threads: 1
    resources:
        mem_mb=MEMORY["train"],
        runtime=lambda wc, attempt: 240 * attempt,
        gpu=GPUS,
    params:
        hyperparameters=lambda wc: HYPERPARAMETERS[
            VARIANTS[wc.variant]["hyperparameters"]
        ],
        seed=lambda wc: VARIANTS[wc.variant]["seed"],
        qlora=lambda wc: VARIANTS[wc.variant]["qlora"],
        lora_targets=lambda wc: MODELS[wc.model]["lora_targets"],
        precision=PRECISION,
        checkpoints=paths.checkpoints("{model}", "{variant}"),
    script:
        "../scripts/train_adapter.py"


rule merge_adapter:
    """Merge a variant's adapter into its parent's weights, with a model card."""
    input:
        unpack(merge_inputs),
    output:
        manifest=paths.merged_model("{model}", "{variant}"),
        card=paths.merged_model("{model}", "{variant}", "README.md"),
    log:
        paths.log("merge_adapter/{model}/{variant}"),
    benchmark:
        paths.benchmark("merge_adapter/{model}/{variant}")
    priority: chain_priority
    conda:
        "../envs/train.yaml"
    # mostly start-up and file work: two such jobs side by side on 2 cores
    threads: 1
    resources:
        mem_mb=MEMORY["inference"],
        runtime=60,
    params:
        card=model_card,
        precision=PRECISION,
    script:
        "../scripts/merge_adapter.py"
