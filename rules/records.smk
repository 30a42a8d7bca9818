rule format_records:
    """Turn a raw dataset into unified records (sft, preference, mcqa or an evaluation kind), shared by
    every study that formats the same raw data the same way."""
    input:
        data=lambda wc: paths.dataset(wc.dataset, "data.parquet"),
    output:
        paths.records("{dataset}"),
    log:
        paths.shared_log("format_records", "{dataset}"),
    benchmark:
        paths.shared_log("format_records", "{dataset}", "tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=MEMORY["data"],
        runtime=60,
    params:
        # the raw data's fingerprint, the formatter and its options: the fingerprint's parts
        format=shared_params("records"),
    script:
        "../scripts/format_records.py"
