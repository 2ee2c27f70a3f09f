"""The numbers benchmarks/accelerator_compile.py derives from one compiled program, and its tables.

Kept apart from the compiling so they are plain functions of a row (a dict), tested
without a TPU or GPU (tests/test_accelerator_compile.py).
"""

from __future__ import annotations

GIB = 2**30


def hbm_estimate(row: dict, full_layers: int = 24) -> int:
    """Peak bytes one chip needs for the program at ``full_layers`` layers.

    ``argument + output - alias + temp`` (donated state is aliased: counted once). A
    reduced model (``row["layers"] < full_layers``) takes the exact full-depth argument
    bytes (``arguments_bytes_full_depth``, from the 24-layer shapes) and its temp bytes
    scaled by ``full_layers / layers``: activations kept for the backward pass grow with
    depth; the scaling over-counts the parts that do not (embedding-table gradients,
    the forward's reused buffers), so it errs towards failing.
    """
    layers = row["layers"]
    arguments = row.get("arguments_bytes_full_depth", row["argument_bytes"])
    temp = row["temp_bytes"] * (full_layers / layers if layers < full_layers else 1.0)
    return int(arguments + max(row["output_bytes"] - row["alias_bytes"], 0) + temp)


def with_roofline(row: dict, chip, full_layers: int = 24) -> dict:
    """The row plus the chip, the HBM check and the roofline numbers (compiled rows only)."""
    row = dict(row, chip=chip.name, chip_source=chip.source)
    if not row.get("compiled"):
        return row
    chips = row["chips"]
    peak = hbm_estimate(row, full_layers)
    usable = chip.hbm_bytes * chip.usable
    flops = row["executed_flops"] / chips
    # Bytes: XLA's count where it has one (loop bodies once), never below reading the
    # arguments and writing the outputs once.
    moved = max(row["xla_bytes_accessed"], row["argument_bytes"] + row["output_bytes"])
    seconds = max(flops / chip.peak_flops, moved / chip.hbm_bandwidth)
    row.update(peak_bytes=peak, hbm_usable_bytes=int(usable), hbm_fraction=peak / usable,
               flops_per_chip=flops, useful_flops_per_chip=row["useful_flops"] / chips,
               bytes_per_chip=moved, roofline_s=seconds,
               bound="compute" if flops / chip.peak_flops >= moved / chip.hbm_bandwidth
               else "memory",
               tokens_per_s_per_chip=row["tokens"] / chips / seconds,
               mfu_ceiling=row["useful_flops"] / chips / (chip.peak_flops * seconds))
    return row


def _cell(row: dict) -> list[str]:
    head = [row["topology"], row["program"], row["implementation"],
            row.get("shape", row.get("shape_name", ""))]
    if not row.get("compiled"):
        return head + ["**error**: " + row.get("error", "?").splitlines()[0][:160]] + [""] * 6
    return head + [
        f"{row['compile_s']:.0f}" + (f" ({row['compile_cpu_s']:.0f})" if "compile_cpu_s" in row
                                       else ""),
        f"{row['argument_bytes'] / GIB:.2f} / {row['temp_bytes'] / 2**20:,.0f} / "
        f"{row['output_bytes'] / 2**20:,.1f}",
        f"{row['peak_bytes'] / GIB:.2f} ({100 * row['hbm_fraction']:.0f}%)",
        f"{row['flops_per_chip'] / 1e12:.2f} ({row['useful_flops_per_chip'] / 1e12:.2f})",
        (f"{row['xla_flops'] / 1e12:.2f} / {row['xla_bytes_accessed'] / 1e9:.1f}"
         if row["xla_flops"] >= 0 else "none"),
        f"{row['roofline_s'] * 1e3:.1f} ({row['bound']})",
        f"{row['tokens_per_s_per_chip']:,.0f} / {100 * row['mfu_ceiling']:.0f}%",
    ]


HEADER = ["topology", "program", "attention", "shape (global)", "compile s (CPU s)",
          "per chip: args GiB / temp MiB / out MiB", "peak GiB (of usable HBM)",
          "TFLOP per chip executed (useful)", "XLA's count: TFLOP / GB accessed",
          "roofline ms (bound)", "tokens/s per chip / MFU ceiling"]


def table(rows: list[dict]) -> str:
    """Markdown: one table per platform, rows in compile order."""
    out = []
    for platform in ("tpu", "gpu"):
        mine = [r for r in rows if r["platform"] == platform]
        if not mine:
            continue
        out += [f"**{platform.upper()}** ({mine[0]['jax']}; chips: "
                + "; ".join(sorted({f"{r['chip']}: {r['chip_source']}" for r in mine})) + ")",
                "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(_cell(r)) + " |" for r in mine]
        out.append("")
    return "\n".join(out)
