"""Merges the two sides' JSON results into the peer-benchmark tables (Markdown)."""

import statistics

QAT_ROWS = (
    ("tfmot_qat_w8a8", "tfmot default 8-bit QAT (tf_keras)"),
    ("kq_lsq_w8a8", "kqrobust LSQ W8A8 (Keras 3)"),
)
PTQ_ROWS = (
    ("tflite_ptq", "TFLite converter PTQ (float model)"),
    ("keras_quantize", "Keras `model.quantize` (Dense layers only)"),
    ("kq_ptq_minmax", "kq.ptq min-max"),
    ("kq_ptq_aciq_laplace", "kq.ptq ACIQ (Laplace)"),
    ("kq_robust_ptq_minmax", "kq.robustify + kq.ptq min-max"),
    ("kq_robust_ptq_aciq_laplace", "kq.robustify + kq.ptq ACIQ (Laplace)"),
)
BITS = ("w8a8", "w4a8", "w4a4")


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}"


def step_time_summary(kq_runs, tfmot_runs):
    """Per-architecture medians over rounds and the kqrobust/tfmot ratio.

    Args:
        kq_runs: list of kqrobust-side `time` results (one per round).
        tfmot_runs: list of tfmot-side `time` results (may be empty).

    Returns:
        A dict with the median ms per step of every candidate,
        `ratio_qat` = kqrobust LSQ W8A8 / tfmot QAT (None without tfmot), each
        side's in-process QAT/float overhead (`kq_overhead`, `tfmot_overhead`)
        and their ratio `ratio_overhead`. The overheads compare steps timed
        in one process, so they hold up when the load of a shared machine
        changes between the two sides' processes; `ratio_qat` does not.
    """

    def median(runs, key):
        return statistics.median(r["ms_per_step"][key] for r in runs) if runs else None

    def overhead(runs):
        return (
            statistics.median(r["ms_per_step"]["qat"] / r["ms_per_step"]["float"] for r in runs)
            if runs
            else None
        )

    summary = {
        "kq_float_ms": median(kq_runs, "float"),
        "kq_qat_ms": median(kq_runs, "qat"),
        "tfmot_float_ms": median(tfmot_runs, "float"),
        "tfmot_qat_ms": median(tfmot_runs, "qat"),
        "rounds": len(kq_runs),
    }
    summary["ratio_qat"] = summary["kq_qat_ms"] / summary["tfmot_qat_ms"] if tfmot_runs else None
    summary["ratio_float"] = (
        summary["kq_float_ms"] / summary["tfmot_float_ms"] if tfmot_runs else None
    )
    summary["kq_overhead"] = overhead(kq_runs)
    summary["tfmot_overhead"] = overhead(tfmot_runs)
    summary["ratio_overhead"] = (
        summary["kq_overhead"] / summary["tfmot_overhead"] if tfmot_runs else None
    )
    return summary


def _qat_table(results):
    epochs = results["config"]["epochs"]
    lines = [
        f"QAT from the same float digits model ({_pct(results['float_accuracy'])}% "
        f"float), {epochs} epochs, Adam, batch {results['config']['batch_size']}:",
        "",
        "| QAT | Keras accuracy % | int8 TFLite accuracy % | fit seconds |",
        "|---|---|---|---|",
    ]
    for key, label in QAT_ROWS:
        row = results["digits"].get(key)
        if row is None:
            lines.append(f"| {label} | skipped | skipped | skipped |")
            continue
        tflite = row.get("tflite", {})
        lines.append(
            f"| {label} | {_pct(row['keras_accuracy'])} | "
            f"{_pct(tflite.get('accuracy')) if 'error' not in tflite else 'export failed'}"
            f" | {row['fit_seconds']:.1f} |"
        )
    return lines


def _time_table(results):
    lines = [
        "Train-step time (median ms per step; medians over rounds of interleaved "
        "in-process medians; random data). Overheads are QAT/float inside one process; "
        "the overhead ratio is the robust comparison on a machine whose load drifts:",
        "",
        "| model | batch | tf_keras float | tfmot QAT | Keras 3 float | kqrobust LSQ W8A8 "
        "| kqrobust / tfmot (QAT) | goal <= 1.0 | tfmot overhead | kqrobust overhead "
        "| overhead ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, spec):
        return "skipped" if value is None else format(value, spec)

    for arch, s in results["step_time"].items():
        ratio = s["ratio_qat"]
        verdict = "n/a" if ratio is None else ("met" if ratio <= 1.0 else "**not met**")
        lines.append(
            f"| {arch} | {s['batch_size']} | {fmt(s['tfmot_float_ms'], '.1f')} | "
            f"{fmt(s['tfmot_qat_ms'], '.1f')} | {fmt(s['kq_float_ms'], '.1f')} | "
            f"{fmt(s['kq_qat_ms'], '.1f')} | {fmt(ratio, '.2f')} | {verdict} | "
            f"{fmt(s['tfmot_overhead'], '.2f')} | {fmt(s['kq_overhead'], '.2f')} | "
            f"{fmt(s['ratio_overhead'], '.2f')} |"
        )
    return lines


def _ptq_table(results):
    digits = results["digits"]
    lines = [
        "PTQ accuracy % on digits (Keras evaluation, except the TFLite converter row, "
        "which LiteRT runs):",
        "",
        "| method | W8A8 | W4A8 | W4A4 |",
        "|---|---|---|---|",
    ]
    for prefix, label in PTQ_ROWS:
        cells = []
        for bits in BITS:
            if prefix == "tflite_ptq":
                row = digits.get(f"tflite_ptq_{bits}", {}).get("tflite", {})
                value = row.get("accuracy")
                cells.append(_pct(value) if value is not None else "n/a (8-bit only)")
            elif prefix == "keras_quantize":
                mode = {"w8a8": "int8", "w4a8": "int4"}.get(bits)
                row = digits.get(f"keras_quantize_{mode}")
                cells.append(
                    _pct(row["keras_accuracy"])
                    + (" (W4, float inputs)" if mode == "int4" else " (W8, int8 inputs)")
                    if row
                    else "n/a"
                )
            else:
                row = digits.get(f"{prefix}_{bits}")
                cells.append(_pct(row["keras_accuracy"]) if row else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _tflite_table(results):
    lines = [
        "Exported TFLite files (LiteRT, batch 1, 1 thread, median latency):",
        "",
        "| model | file | I/O | size KB | latency us | LiteRT accuracy % |",
        "|---|---|---|---|---|---|",
    ]
    for arch, rows in results["tflite"].items():
        for name, row in rows.items():
            tflite = row.get("tflite")
            if not tflite:
                continue
            if "error" in tflite:
                lines.append(f"| {arch} | {name} | export failed: {tflite['error']} | | | |")
                continue
            lines.append(
                f"| {arch} | {name} | {tflite['io']} | {tflite['size_kb']:.1f} | "
                f"{1000 * tflite['latency_ms']:.1f} | {_pct(tflite['accuracy'])} |"
            )
    return lines


def markdown(results):
    """The Markdown report of a merged `results` dict (see `benchmarks/peers.py`)."""
    lines = [f"Machine: {results['machine']}", ""]
    if results.get("skipped"):
        lines += [f"**Skipped:** {reason}" for reason in results["skipped"]] + [""]
    for part in (_qat_table, _time_table, _ptq_table, _tflite_table):
        lines += part(results) + [""]
    return "\n".join(lines)
