rule fetch_model:
    """Fetch one base model (M0) into an ordinary safetensors folder with its manifest."""
    output:
        manifest=paths.base_model("{model}"),
    log:
        paths.shared_log("fetch_model", "{model}"),
    benchmark:
        paths.shared_log("fetch_model", "{model}", "tsv")
    # the start of the critical path (see train_adapter)
    priority: chain_priority
    conda:
        "../envs/train.yaml"
    # a download or a single-threaded GGUF conversion: it runs beside the dataset jobs
    threads: 1
    resources:
        mem_mb=MEMORY["model"],
        runtime=120,
    params:
        # the source, chat template, remote-code switch and lock: the fingerprint's parts
        fetch=shared_params("models"),
    script:
        "../scripts/fetch_model.py"
