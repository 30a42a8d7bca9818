rule fetch_dataset:
    """Fetch one raw dataset (hub, local file or generator) with its provenance manifest, into the
    shared folder its fingerprint names (every study with the same source and settings reads it).
    """
    input:
        local_source_input,
    output:
        data=paths.dataset("{dataset}", "data.parquet"),
        manifest=paths.dataset("{dataset}", "manifest.json"),
    log:
        paths.shared_log("fetch_dataset", "{dataset}"),
    benchmark:
        paths.shared_log("fetch_dataset", "{dataset}", "tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=MEMORY["data"],
        runtime=120,
    params:
        # the source, its content (sha256, revision), the row checks and the lock: the fingerprint's parts
        fetch=shared_params("datasets"),
    script:
        "../scripts/fetch_dataset.py"
