rule fetch_dataset:
    """Fetch one raw dataset (hub, local file or generator) with its provenance manifest."""
    input:
        local_source_input,
    output:
        data="resources/datasets/{dataset}/data.parquet",
        manifest="resources/datasets/{dataset}/manifest.json",
    params:
        source=lambda wc: DATASETS[wc.dataset]["source"],
        rows=lambda wc: DATASETS[wc.dataset]["rows"],
    log:
        "logs/fetch_dataset/{dataset}.log",
    benchmark:
        "benchmarks/fetch_dataset/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/fetch_dataset.py"
