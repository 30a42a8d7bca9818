# Optional outputs, outside `rule all`: ask for them by path, e.g.
#   snakemake --cores 1 results/llamafactory/qwen/M1-DS-cosine.yaml


rule llamafactory_config:
    """A run of Tables 2/3 as a LlamaFactory YAML (train it with `llamafactory-cli train` instead of Zephyr's trainer)."""
    input:
        unpack(llamafactory_inputs),
    output:
        paths.llamafactory("{model}", "{variant}"),
    log:
        paths.log("llamafactory_config/{model}/{variant}"),
    benchmark:
        paths.benchmark("llamafactory_config/{model}/{variant}")
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        variant=lambda wc: _variant(wc),
        hyperparameters=lambda wc: HYPERPARAMETERS[
            VARIANTS[wc.variant]["hyperparameters"]
        ],
        lora_targets=lambda wc: MODELS[wc.model]["lora_targets"],
        # the study's precision, as Zephyr's own training uses it (LlamaFactory's bf16: bf16 compute)
        bf16=zprecision.compute_dtype(PRECISION) == "bfloat16",
    script:
        "../scripts/llamafactory_config.py"
