# A study's draws (`draws`, `make run DRAWS=N`; zephyr/studies.py): draw k >= 2 moves only the training seeds,
# so what does not depend on the draw is computed once, in draw 1. In draw k the base models' (M0) evaluations,
# pair scores and exports are draw 1's files, linked into draw k's tree by the rules below, which come before
# the rules that compute them for M0 (ruleorder): the tree is complete and every reader of results unchanged.
# Were draw 1's file missing (draw 1 not run yet), Snakemake would compute it here instead, with the same numbers.


if DRAW_BASE:
    # everything those outputs read (zstudies.base_inputs): changed, they are taken again
    BASE_INPUTS = zpaths.fingerprint(zstudies.base_inputs(config, paths))

    rule draw1_evaluation:
        """A base model's evaluation on a task, draw 1's (`evaluate`): this draw's evaluation set is draw 1's."""
        input:
            unpack(lambda wc: base_evaluation_set(wc.task)),
            metrics=lambda wc: DRAW_BASE.metrics(wc.model, wc.variant, wc.task),
            records=lambda wc: DRAW_BASE.metrics(
                wc.model, wc.variant, wc.task, ext="jsonl"
            ),
        output:
            metrics=paths.metrics("{model}", "{variant}", "{task}"),
            records=paths.metrics("{model}", "{variant}", "{task}", ext="jsonl"),
        log:
            paths.log("draw1/evaluate/{model}/{variant}/{task}"),
        wildcard_constraints:
            variant="M0",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            base=BASE_INPUTS,
        script:
            "../scripts/draw1.py"

    rule draw1_perplexity:
        """A base model's perplexity in one format, draw 1's (`evaluate_perplexity`)."""
        input:
            unpack(lambda wc: base_evaluation_set(wc.task)),
            metrics=lambda wc: DRAW_BASE.metrics(
                wc.model, wc.variant, wc.task, wc.format
            ),
            records=lambda wc: DRAW_BASE.metrics(
                wc.model, wc.variant, wc.task, wc.format, "jsonl"
            ),
        output:
            metrics=paths.metrics("{model}", "{variant}", "{task}", "{format}"),
            records=paths.metrics("{model}", "{variant}", "{task}", "{format}", "jsonl"),
        log:
            paths.log("draw1/evaluate/{model}/{variant}/{task}-{format}"),
        wildcard_constraints:
            variant="M0",
            task=PER_FORMAT_TASKS,
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            base=BASE_INPUTS,
        script:
            "../scripts/draw1.py"

    rule draw1_pair_scores:
        """A base model's pair scores, draw 1's (`score_pairs`), with their manifest."""
        input:
            unpack(lambda wc: base_evaluation_set(PAIR_SCORES_TASK)),
            scores=lambda wc: DRAW_BASE.pair_scores(wc.model, wc.variant),
        output:
            scores=paths.pair_scores("{model}", "{variant}"),
        log:
            paths.log("draw1/score_pairs/{model}/{variant}"),
        wildcard_constraints:
            variant="M0",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            base=BASE_INPUTS,
        script:
            "../scripts/draw1.py"

    rule draw1_export:
        """A base model's quantized export, draw 1's folder (`export_quantized`)."""
        input:
            manifest=lambda wc: DRAW_BASE.export(wc.model, wc.variant, wc.format),
        output:
            manifest=paths.export("{model}", "{variant}", "{format}"),
        log:
            paths.log("draw1/export_quantized/{model}/{variant}-{format}"),
        wildcard_constraints:
            variant="M0",
            format=_alternatives(study.QUANTIZED),
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            base=BASE_INPUTS,
            folders=True,
        script:
            "../scripts/draw1.py"

    ruleorder: draw1_evaluation > evaluate
    ruleorder: draw1_perplexity > evaluate_perplexity
    ruleorder: draw1_pair_scores > score_pairs
    ruleorder: draw1_export > export_quantized
