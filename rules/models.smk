rule fetch_model:
    """Fetch one base model (M0) into an ordinary safetensors folder with its manifest."""
    output:
        manifest=paths.base_model("{model}"),
    log:
        "logs/fetch_model/{model}.log",
    benchmark:
        "benchmarks/fetch_model/{model}.tsv"
    # the start of the critical path (see train_adapter)
    priority: chain_priority
    conda:
        "../envs/train.yaml"
    # a download or a single-threaded GGUF conversion: it runs beside the dataset jobs
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
    params:
        source=lambda wc: MODELS[wc.model]["source"],
        chat_template=lambda wc: MODELS[wc.model]["chat_template"],
        trust_remote_code=lambda wc: MODELS[wc.model]["trust_remote_code"],
        lock=lambda wc: lock_file(MODELS[wc.model]["source"]),
    script:
        "../scripts/fetch_model.py"
