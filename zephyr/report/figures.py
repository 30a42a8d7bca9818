"""The appendix figures, drawn from the training runs' `log_history.csv` files.

Figure 1: the learning-rate schedules; Figures 2 and 3: SFT train and validation losses per model
(D_S vs D_L, cosine vs constant); Figure 4: DPO loss and reward accuracy from M0 and from M1;
plus a quantization figure (size against perplexity).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..study import PAPER_DPO_VALIDATION, trainer_of

STYLE = {"cosine": "-", "constant": "--"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_history(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _series(history: pd.DataFrame, column: str) -> pd.Series:
    if column not in history:
        return pd.Series(dtype=float)
    rows = history.dropna(subset=[column])
    return rows.groupby("step")[column].last()


def learning_rates(runs: dict[str, pd.DataFrame], out: str | Path, title: str = "Learning-rate schedules") -> None:
    """Figure 1. `runs`: label → log history."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, history in runs.items():
        lr = _series(history, "learning_rate")
        ax.plot(lr.index, lr.values, label=label)
    ax.set(xlabel="step", ylabel="learning rate", title=title)
    ax.legend(fontsize=8)
    _save(fig, out)


def sft_losses(runs: dict[str, pd.DataFrame], out: str | Path, title: str) -> None:
    """Figures 2 and 3: (a) train and (b) validation loss of one model's SFT runs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for label, history in runs.items():
        style = next((s for key, s in STYLE.items() if key in label), "-")
        for ax, column in zip(axes, ("loss", "eval_loss")):
            series = _series(history, column)
            ax.plot(series.index, series.values, style, marker="." if column == "eval_loss" else None, label=label)
    axes[0].set(xlabel="step", ylabel="loss", title="(a) train loss")
    axes[1].set(xlabel="step", ylabel="loss", title="(b) validation loss")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def dpo_dynamics(runs: dict[str, pd.DataFrame], out: str | Path, title: str = "DPO training dynamics",
                 reported: dict[str, float] | None = None) -> None:
    """Figure 4: DPO loss and reward accuracy (train and validation) per run; `reported` (label → the
    report's final validation reward accuracy) draws the report's value beside the run's curve."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for label, history in runs.items():
        for ax, (train, val) in zip(axes, (("loss", "eval_loss"), ("rewards/accuracies", "eval_rewards/accuracies"))):
            line = ax.plot(*_xy(_series(history, train)), label=f"{label} train")[0]
            ax.plot(*_xy(_series(history, val)), "--", marker=".", color=line.get_color(), label=f"{label} validation")
        if label in (reported or {}):
            axes[1].axhline(reported[label], linestyle=":", color=line.get_color(),
                            label=f"{label} validation, the report's: {reported[label]:.2f}")
    axes[0].set(xlabel="step", ylabel="DPO loss", title="(a) loss")
    axes[1].set(xlabel="step", ylabel="reward accuracy", title="(b) reward accuracy")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def versus_paper(table: pd.DataFrame, out: str | Path) -> None:
    """Table 1 against the paper: per metric, the paper's value and the reproduction's (± its standard
    error) for each row the paper has, each row naming the model that ran in its slot; the title says
    the comparison is structural where that is not the report's model."""
    plt = _pyplot()
    metrics = list(dict.fromkeys(table["metric"])) or ["(nothing to compare)"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = table[table["metric"] == metric]
        y = range(len(rows))
        ax.barh([i + 0.2 for i in y], rows["paper"], height=0.4, label="paper", color="0.7")
        ax.barh([i - 0.2 for i in y], rows["reproduction"], height=0.4, label="reproduction",
                xerr=rows["stderr"].fillna(0), color="tab:blue")
        ax.set_yticks(list(y), [f"{m}\n({'as reported' if same else ran})" for m, ran, same in
                                zip(rows["Model"], rows["ran"], rows["report's model"])], fontsize=6)
        ax.set_title(metric, fontsize=9)
        ax.invert_yaxis()
    axes[0][0].legend(fontsize=7)
    structural = not table["report's model"].all() if len(table) else False
    fig.suptitle("Table 1: reproduction (± standard error) against the paper" + (
        "\nstructural only: rows whose slot ran another model than the report's (named under each label)"
        if structural else ""), fontsize=10)
    _save(fig, out)


def quantization(table: pd.DataFrame, out: str | Path) -> None:
    """Size on disk against perplexity, one marker per format, one line per model variant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, variant), rows in table.groupby(["model", "variant"], sort=False):
        rows = rows.sort_values("size_mb")
        ax.plot(rows["size_mb"], rows["perplexity"], "o-", label=f"{model} {variant}")
        for _, row in rows.iterrows():
            ax.annotate(row["format"], (row["size_mb"], row["perplexity"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="size on disk (MB)", ylabel="perplexity", title="Quantization: size against perplexity")
    ax.legend(fontsize=7)
    _save(fig, out)


def _xy(series: pd.Series):
    return series.index, series.values


def _save(fig, out: str | Path) -> None:
    from .. import files

    fig.tight_layout()
    with files.atomic(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    fig.clf()


def appendix(histories: dict[tuple[str, str], str | Path], variants: dict, hyperparameters: dict,
             outputs: dict) -> None:
    """Draw the configured appendix figures. `histories`: (model, variant) → log_history.csv, labelled
    "model/variant"; `outputs`: learning_rates, sft_<model> and dpo → PNG paths (`paths.figure_outputs`)."""
    runs = {key: read_history(path) for key, path in histories.items()}

    def trainer(key):
        return trainer_of(variants[key[1]], hyperparameters)

    sft = {key: h for key, h in runs.items() if trainer(key) == "sft"}
    models = sorted({model for model, _ in sft})
    if "learning_rates" in outputs:
        learning_rates({f"{m}/{v}": h for (m, v), h in sft.items() if m == models[0]}, outputs["learning_rates"],
                       f"Figure 1: learning-rate schedules ({models[0]})")
    for model in models:
        sft_losses({v: h for (m, v), h in sft.items() if m == model}, outputs[f"sft_{model}"],
                   f"SFT losses of {model} (D_S and D_L, cosine and constant)")
    if "dpo" in outputs:
        dpo = {key: h for key, h in runs.items() if trainer(key) == "dpo"}
        dpo_dynamics({f"{m}/{v}": h for (m, v), h in dpo.items()}, outputs["dpo"], "Figure 4: DPO training dynamics",
                     {f"{m}/{v}": PAPER_DPO_VALIDATION[v] for m, v in dpo if v in PAPER_DPO_VALIDATION})
