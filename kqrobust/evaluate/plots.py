"""PNG plots of the robustness results (matplotlib's Agg canvas, no pyplot state)."""

from kqrobust.atomic import atomic_path


def _figure(width=6.4, height=4.0):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("Plots need matplotlib. Fix: pip install 'kqrobust[plots]'.") from err
    return Figure(figsize=(width, height), dpi=100)


def _save(fig, ax, path, title, xlabel, ylabel):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary)


def _activation_label(rows):
    """A model's activations in the quantized rows: "A4", "float", or "mixed"."""
    bits = {r["activation_bits"] for r in rows if r["weight_bits"] is not None}
    if len(bits) != 1:
        return "mixed"
    (only,) = bits
    return "float" if only is None else f"A{only}"


def plot_bitwidth(results, path):
    """Accuracy against the bit-width configuration, one line per model.

    When the models' configurations differ (each with its own activations),
    the x axis is the weight bit-width and the legend gives the activations.
    """
    fig = _figure()
    ax = fig.subplots()
    labels = [[r["label"] for r in rows] for rows in results.values()]
    shared = all(row == labels[0] for row in labels)
    for name, rows in results.items():
        ticks = [
            r["label"] if shared or r["weight_bits"] is None else f"W{r['weight_bits']}"
            for r in rows
        ]
        ax.plot(
            ticks,
            [100 * r["accuracy"] for r in rows],
            marker="o",
            label=name if shared else f"{name} (activations: {_activation_label(rows)})",
        )
    _save(
        fig,
        ax,
        path,
        "Accuracy vs bit-width (no fine-tuning; FP: no quantizer)",
        "weight/activation bits" if shared else "weight bits",
        "top-1 accuracy (%)",
    )


def plot_step_size(results, path):
    """Accuracy against the step scale `k` (s = k * s')."""
    fig = _figure()
    ax = fig.subplots()
    for name, rows in results.items():
        ax.plot(
            [r["factor"] for r in rows], [100 * r["accuracy"] for r in rows], marker="o", label=name
        )
    _save(fig, ax, path, "Step-size robustness", "k (s = k * s')", "top-1 accuracy (%)")


def plot_kl(results, path):
    """Per-layer KL divergence between float and quantized outputs."""
    fig = _figure(width=max(6.4, 0.5 * max(len(r) for r in results.values())))
    ax = fig.subplots()
    for name, rows in results.items():
        ax.plot(range(len(rows)), [r["kl"] for r in rows], marker="o", label=name)
    first = next(iter(results.values()))
    ax.set_xticks(range(len(first)), [r["layer"] for r in first], rotation=60, ha="right")
    ax.set_yscale("log")
    _save(fig, ax, path, "Error propagation", "layer", "KL(float || quantized)")


def plot_level_sensitivity(results, path):
    """Accuracy when only one weight level is quantized; dashed: float."""
    fig = _figure()
    ax = fig.subplots()
    for name, result in results.items():
        levels = result["levels"]
        (line,) = ax.plot(
            [r["level"] for r in levels],
            [100 * r["accuracy"] for r in levels],
            marker="o",
            label=name,
        )
        ax.axhline(100 * result["float_accuracy"], linestyle="--", color=line.get_color())
    _save(
        fig,
        ax,
        path,
        "Single-level quantization sensitivity",
        "quantization level",
        "top-1 accuracy (%)",
    )


def plot_weight_histograms(results, path):
    """Pooled histograms of standardised weights (symmetry, saturation)."""
    fig = _figure()
    ax = fig.subplots()
    for name, stats in results.items():
        counts = stats["histogram"]["counts"]
        total = max(sum(counts), 1)
        layers = stats["layers"].values()
        symmetry = sum(s["symmetry"] for s in layers) / len(layers)
        kurtosis = sum(s["kurtosis"] for s in layers) / len(layers)
        ax.stairs(
            [c / total for c in counts],
            stats["histogram"]["edges"],
            label=f"{name} (symmetry {symmetry:.3f}, kurtosis {kurtosis:.2f})",
        )
    ax.set_yscale("log")
    _save(
        fig,
        ax,
        path,
        "Weights / per-channel std (tails clipped at 6)",
        "w / std",
        "share of weights",
    )
