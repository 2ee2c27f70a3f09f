"""PyTorch side of benchmarks/gpu_check.sh: SDPA (enable_gqa) and FlexAttention on the same layers.

  python benchmarks/gpu_torch_attention.py RESULTS_DIR [--dry-run]

Runs in its own process so PyTorch and JAX do not compete for GPU memory.
SDPA takes padding and windows as a dense boolean mask (none for full rows,
so it can use its flash backend); FlexAttention gets a block mask built from
window + padding, compiled with torch.compile (eager in --dry-run, on CPU).
Writes RESULTS_DIR/attention_torch.json; without torch it records that and
exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as common  # noqa: E402

START = time.time()
BUDGET_S = float(os.environ.get("BUDGET_S", "300"))

# Smaller tiles for head_dim 256 if the default Flex kernel runs out of shared memory.
FLEX_FALLBACK_OPTIONS = {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_M1": 32, "BLOCK_N1": 64,
                         "BLOCK_M2": 64, "BLOCK_N2": 32, "num_stages": 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    dry_run = args.dry_run or os.environ.get("DRY_RUN") == "1"
    out_path = os.path.join(args.results_dir, "attention_torch.json")
    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as exc:
        print(f"torch baselines skipped: {exc}")
        common.write_json(out_path, {"rows": [], "error": f"torch unavailable: {exc}"})
        return 0

    device = "cpu" if dry_run else "cuda"
    if not dry_run and not torch.cuda.is_available():
        print("torch baselines skipped: no CUDA device")
        common.write_json(out_path, {"rows": [], "error": "no CUDA device for torch"})
        return 0
    sync = (lambda _: None) if device == "cpu" else (lambda _: torch.cuda.synchronize())
    flex = flex_attention if dry_run else torch.compile(flex_attention, dynamic=False)
    env = {"torch": torch.__version__,
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    rows = []
    for layer in common.layers(dry_run):
        seg_np = common.segment_ids(layer)
        gen = torch.Generator(device="cpu").manual_seed(0)

        def rand(*shape):
            x = torch.randn(*shape, generator=gen).to(device=device, dtype=torch.bfloat16)
            return x.requires_grad_(True)

        # [B, H, T, D]: torch's layout.
        q = rand(layer.b, layer.hq, layer.t, layer.d)
        k = rand(layer.b, layer.hkv, layer.t, layer.d)
        v = rand(layer.b, layer.hkv, layer.t, layer.d)
        do = torch.randn(q.shape, generator=gen).to(device=device, dtype=torch.bfloat16)
        dense = None
        if layer.padded or layer.window is not None:
            dense = torch.from_numpy(common.dense_mask(layer, seg_np)[:, None]).to(device)
        seg = torch.from_numpy(seg_np).to(device)
        left, right = layer.window if layer.window is not None else (layer.t, layer.t)

        def mask_mod(b, h, q_idx, kv_idx):
            same = (seg[b, q_idx] == seg[b, kv_idx]) & (seg[b, kv_idx] != 0)
            return same & (kv_idx - q_idx <= right) & (q_idx - kv_idx <= left)

        block_mask = create_block_mask(mask_mod, layer.b, None, layer.t, layer.t, device=device)
        flex_options = [None, FLEX_FALLBACK_OPTIONS]

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=True)

        def flex_call(options):
            return lambda q, k, v: flex(q, k, v, block_mask=block_mask, enable_gqa=True,
                                        kernel_options=options)

        for backward in (False, True):
            flops = common.flops(layer, seg_np, backward)
            for impl in ("sdpa", "flex"):
                row = {"layer": layer.name, "pass": "fwd+bwd" if backward else "fwd",
                       "impl": impl, "flops": flops, **layer.as_dict()}
                candidates = [sdpa] if impl == "sdpa" else [flex_call(o) for o in flex_options]
                errors = []
                for attempt, forward in enumerate(candidates):
                    if time.time() - START > BUDGET_S:
                        errors.append("skipped: time budget")
                        break
                    if backward:
                        def call(forward=forward):
                            return torch.autograd.grad(forward(q, k, v), (q, k, v), do)
                    else:
                        def call(forward=forward):
                            with torch.no_grad():
                                return forward(q.detach(), k.detach(), v.detach())
                    try:
                        seconds = common.time_calls(call, sync, quick=dry_run)
                        row.update(ms=seconds * 1e3, tflops=flops / seconds / 1e12)
                        if impl == "flex":
                            row["kernel_options"] = flex_options[attempt]
                        break
                    except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory
                        errors.append(common.short_error(exc))
                if "ms" not in row:
                    row["error"] = " | ".join(errors)
                rows.append(row)
                print(f"bench {layer.name:14s} {row['pass']:8s} {impl:7s} "
                      + (f"{row['ms']:9.3f} ms {row['tflops']:9.3g} TFLOP/s" if "ms" in row
                         else row["error"][:200]), flush=True)
    common.write_json(out_path, {"env": env, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
