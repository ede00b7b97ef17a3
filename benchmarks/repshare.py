"""RepShare vs the naive transformation block: activation memory, step time, representation counts.

Same candidates, same softmax(alpha) weights, same input for every variant (Sec. 3.2; goals in
benchmarks/README.md). Memory is exact and noise-free: the bytes of the unique storages autograd saves for
backward during one forward (``torch.autograd.graph.saved_tensors_hooks``), split into activations and
parameters. Time is the median forward+backward over ``--repeats``, the variants interleaved (order rotated
every repeat) so that machine load hits them alike. Goal from the issue: RepShare <= 0.5x naive in both.
The paper reports ~1/3 memory and ~4x speed for the whole search (Table 2), which also includes the parts
RepShare does not touch (backbone, FPN, 1x1 convs), so block-level ratios are not directly comparable.

    python benchmarks/repshare.py --channels 96 --size 32 --batch 2 --repeats 10
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from raynas.errors import OneLineParser, run_main
from raynas.io import atomic_write_json, select_device
from raynas.spaces.fad.repshare import NaiveBlock, RepShareBlock


def saved_bytes(block: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> dict[str, int]:
    """Bytes of the unique storages saved for backward by one forward, activations vs parameters."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in block.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x, weights)
    params = sum(n for ptr, n in storages.items() if ptr in param_ptrs)
    return {"activations": sum(storages.values()) - params, "parameters": params}


def step(block: nn.Module, x: torch.Tensor, alphas: torch.Tensor, device: torch.device) -> float:
    """Seconds for one forward + backward (alphas and weights both get gradients, as in a DARTS step)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    block(x, torch.softmax(alphas, 0)).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(channels: int, size: int, batch: int, repeats: int, warmup: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    variants: dict[str, nn.Module] = {
        "naive": NaiveBlock(channels),
        "repshare": RepShareBlock(channels, decouple=True),
        "repshare_no_decouple": RepShareBlock(channels, decouple=False),
    }
    for block in variants.values():
        block.to(device)
    n = len(variants["naive"].candidates)
    alphas = (1e-3 * torch.randn(n, device=device)).requires_grad_()
    x = torch.randn(batch, channels, size, size, device=device)
    memory = {name: saved_bytes(b, x, torch.softmax(alphas, 0)) for name, b in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            seconds = step(variants[name], x, alphas, device)
            if r >= warmup:
                times[name].append(seconds)
    naive_mem = memory["naive"]["activations"]
    naive_time = statistics.median(times["naive"])
    result = {
        "config": {
            "channels": channels,
            "size": size,
            "batch": batch,
            "repeats": repeats,
            "warmup": warmup,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "variants": {},
    }
    for name, block in variants.items():
        med = statistics.median(times[name])
        result["variants"][name] = {
            "representations_per_forward": block.representations_per_forward,
            "params": sum(p.numel() for p in block.parameters()),
            "saved_activation_bytes": memory[name]["activations"],
            "saved_parameter_bytes": memory[name]["parameters"],
            "fwd_bwd_median_s": med,
            "fwd_bwd_times_s": times[name],
            "memory_ratio_vs_naive": memory[name]["activations"] / naive_mem,
            "time_ratio_vs_naive": med / naive_time,
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=96, help="c' of the block (paper: 96, Table 3)")
    parser.add_argument("--size", type=int, default=32, help="feature map side in pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default="benchmarks/results/repshare.json")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    result = run(args.channels, args.size, args.batch, args.repeats, args.warmup, device)
    print(f"config: {result['config']}")
    print(f"{'variant':<22}{'reps':>5}{'params':>9}{'saved MiB':>11}{'mem x':>7}", end="")
    print(f"{'fwd+bwd ms':>12}{'time x':>8}")
    for name, v in result["variants"].items():
        print(
            f"{name:<22}{v['representations_per_forward']:>5}{v['params']:>9}"
            f"{v['saved_activation_bytes'] / 2**20:>11.2f}{v['memory_ratio_vs_naive']:>7.3f}"
            f"{v['fwd_bwd_median_s'] * 1e3:>12.1f}{v['time_ratio_vs_naive']:>8.3f}"
        )
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(run_main("repshare", lambda: main() and 0))  # a user's mistake: one line, exit 2
