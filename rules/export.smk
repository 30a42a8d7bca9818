rule export_quantized:
    """A 4-bit (NF4) or 8-bit bitsandbytes export of a model, saved right after quantizing."""
    input:
        lambda wc: paths.variant_model(wc.model, wc.variant),
    output:
        manifest=paths.export("{model}", "{variant}", "{format}"),
    log:
        paths.log("export_quantized/{model}/{variant}-{format}"),
    benchmark:
        paths.benchmark("export_quantized/{model}/{variant}-{format}")
    wildcard_constraints:
        format=_alternatives(study.QUANTIZED),
    conda:
        "../envs/train.yaml"
    # mostly start-up and file work: two such jobs side by side on 2 cores
    threads: 1
    resources:
        mem_mb=MEMORY["inference"],
        runtime=60,
        gpu=INFERENCE_GPUS,
    params:
        precision=PRECISION,
    script:
        "../scripts/export_quantized.py"
