rule format_records:
    """Turn a raw dataset into unified records (sft, preference, mcqa or an evaluation kind)."""
    input:
        data=paths.dataset("{dataset}", "data.parquet"),
    output:
        paths.records("{dataset}"),
    log:
        "logs/format_records/{dataset}.log",
    benchmark:
        "benchmarks/format_records/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        formatter=lambda wc: DATASETS[wc.dataset]["format"],
        options=lambda wc: DATASETS[wc.dataset]["options"],
        # the source and its content (sha256, revision): a source that changed keeps these records out
        # of date until a fetch of it succeeds, even when the failed fetch left no output to compare
        source=lambda wc: DATASETS[wc.dataset]["source"],
        content=source_content,
    script:
        "../scripts/format_records.py"
