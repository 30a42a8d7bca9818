rule draw_mixture:
    """Draw a sampled mixture (or held-out set) from its component datasets' records."""
    input:
        unpack(mixture_inputs),
    output:
        train="results/mixtures/{mixture}.json",
        validation="results/mixtures/{mixture}.validation.json",
        stats="results/mixtures/{mixture}.stats.csv",
    params:
        spec=lambda wc: MIXTURES[wc.mixture],
    log:
        "logs/draw_mixture/{mixture}.log",
    benchmark:
        "benchmarks/draw_mixture/{mixture}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/draw_mixture.py"


rule dataset_info:
    """LlamaFactory's dataset_info.json, registering every trainable mixture as it is."""
    input:
        [f"results/mixtures/{m}.json" for m in MIXTURES],
    output:
        "results/mixtures/dataset_info.json",
    params:
        tasks={m: spec["task"] for m, spec in MIXTURES.items()},
    log:
        "logs/dataset_info.log",
    benchmark:
        "benchmarks/dataset_info.tsv"
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/dataset_info.py"
