rule fetch_dataset:
    """Fetch one raw dataset (hub, local file or generator) with its provenance manifest."""
    input:
        local_source_input,
    output:
        data=paths.dataset("{dataset}", "data.parquet"),
        manifest=paths.dataset("{dataset}", "manifest.json"),
    log:
        "logs/fetch_dataset/{dataset}.log",
    benchmark:
        "benchmarks/fetch_dataset/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        source=lambda wc: DATASETS[wc.dataset]["source"],
        rows=lambda wc: DATASETS[wc.dataset]["rows"],
        allow_row_change=lambda wc: DATASETS[wc.dataset]["allow_row_change"],
        content=source_content,
        lock=lambda wc: lock_file(DATASETS[wc.dataset]["source"]),
    script:
        "../scripts/fetch_dataset.py"
