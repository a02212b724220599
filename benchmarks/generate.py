"""Generation throughput: blocks/s and tiles/s per batch size and step count, with FLOPs and peak
fraction.

    python benchmarks/generate.py --config sd21 --random-weights --batch-size 1 --steps 2
    python benchmarks/generate.py --config sd21 --random-weights --dtype bf16 \
        --batch-size 1 4 8 --steps 20 50 --compile --json sd21.json

Builds the model once and times whole generate calls (conditions, denoising loop, VAE decode)
on synthetic blocks for every batch size x step count: the median of --runs timed calls after
--warmup calls (with --compile, the first warmup call of a batch size includes compiling).
FLOPs are counted with torch.utils.flop_counter on one UNet step, the VAE decode and the
condition encoders; the achieved fraction is counted FLOPs / median time / peak, where peak
is --peak-tflops or, if not given, a measured dense matmul rate in the same dtype on the same
device (printed as such).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import BlockRequest, Generator, ScaleInfo, configs  # noqa: E402
from model.codec import decode_latents  # noqa: E402
from model.generator import DTYPES  # noqa: E402
from model.injection import inject_features  # noqa: E402
from model.schedulers import SCHEDULER_NAMES  # noqa: E402

TILES_PER_BLOCK = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="tiny | sd21 | demo | checkpoint folder")
    parser.add_argument("--random-weights", action="store_true", help="sd21: random weights")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1])
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="default: the model's")
    parser.add_argument("--scheduler", choices=SCHEDULER_NAMES, default=None)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512, help="block size in px (512 = real)")
    parser.add_argument(
        "--margin", type=int, default=64, help="context px around the block (64: as served)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args(argv)


def load(args: argparse.Namespace) -> Generator:
    options = {"device": args.device, "dtype": args.dtype}
    options |= {"scheduler": args.scheduler, "batch_invariant": False}
    if args.config == "sd21" and args.random_weights:
        return Generator.from_components(configs.build_sd21(random_weights=True), **options)
    if args.random_weights and args.config != "tiny":
        raise SystemExit("--random-weights applies to sd21 (tiny is always random)")
    if args.config == "tiny":
        return Generator.from_components(configs.build_tiny(), **options)
    return Generator.load(args.config, **options)


def synthetic_requests(batch: int, size: int, margin: int) -> list[BlockRequest]:
    """Blocks framed as the worker frames them: size + 2 * margin px, world-anchored noise."""
    rng = np.random.default_rng(0)
    side = size + 2 * margin

    def image() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")

    scale = ScaleInfo.with_span(18, lat=45.0, span=4)
    return [
        BlockRequest(image(), image(), scale, noise_seed=i, margin=margin, origin=(4096, 4096))
        for i in range(batch)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(generator: Generator, requests: list[BlockRequest]) -> dict[str, float]:
    """FLOPs of one UNet step, one VAE decode and the condition encoders, for the batch."""
    pipe = generator.pipeline
    counts = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            conditions = pipe.encode_conditions(requests)
        counts["conditions"] = counter.get_total_flops()
        side = requests[0].imagery.size[0] // pipe.vae_scale_factor
        shape = (len(requests), pipe.unet.config.in_channels, side, side)
        latents = torch.randn(shape, device=pipe.device, dtype=pipe.dtype)
        with inject_features(pipe.unet, conditions.features), FlopCounterMode(display=False) as c:
            pipe.unet(latents, 500, encoder_hidden_states=conditions.context)
        counts["unet_step"] = c.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            decode_latents(pipe.vae, latents)
        counts["vae_decode"] = counter.get_total_flops()
    return counts


def measured_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Best dense matmul rate seen in `seconds` (n = 2048 on CPU, 8192 on GPU)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best / 1e12


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    generator = load(args)
    build_s = time.perf_counter() - started
    pipe = generator.pipeline
    device = pipe.device
    if args.channels_last:
        for module in (pipe.unet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    batches = {n: synthetic_requests(n, args.size, args.margin) for n in args.batch_size}
    flops = {n: count_flops(generator, requests) for n, requests in batches.items()}  # eager
    if args.compile:
        pipe.unet.compile()
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "given"
    else:
        peak = measured_peak_tflops(device, DTYPES[args.dtype])
        peak_source = "measured dense matmul"
    results = []
    for batch_size, requests in batches.items():
        for steps in args.steps or [generator.steps]:

            def call(requests: list[BlockRequest] = requests, steps: int = steps) -> float:
                sync(device)
                start = time.perf_counter()
                pipe(requests, steps=steps, scheduler=generator.scheduler)
                sync(device)
                return time.perf_counter() - start

            warmup = [call() for _ in range(args.warmup)]
            times = [call() for _ in range(args.runs)]
            median = statistics.median(times)
            f = flops[batch_size]
            total = f["conditions"] + f["unet_step"] * steps + f["vae_decode"]
            result = {
                "config": args.config,
                "model_id": generator.model_id,
                "random_weights": args.random_weights or args.config == "tiny",
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "dtype": args.dtype,
                "batch_size": batch_size,
                "block_px": args.size,
                "frame_px": args.size + 2 * args.margin,
                "steps": steps,
                "scheduler": generator.scheduler,
                "compile": args.compile,
                "channels_last": args.channels_last,
                "build_s": round(build_s, 2),
                "warmup_s": [round(t, 3) for t in warmup],
                "run_s": [round(t, 3) for t in times],
                "median_s": round(median, 3),
                "blocks_per_s": batch_size / median,
                "tiles_per_s": TILES_PER_BLOCK * batch_size / median,
                "unet_gflops_per_step": f["unet_step"] / 1e9,
                "vae_decode_gflops": f["vae_decode"] / 1e9,
                "conditions_gflops": f["conditions"] / 1e9,
                "total_gflops_per_call": total / 1e9,
                "achieved_tflops": total / median / 1e12,
                "peak_tflops": peak,
                "peak_source": peak_source,
                "fraction_of_peak": total / median / 1e12 / peak,
            }
            print()
            for key, value in result.items():
                shown = f"{value:.4g}" if isinstance(value, float) else value
                print(f"{key:>22}: {shown}")
            results.append(result)
            if args.json:  # after every configuration: a run cut short keeps what it measured
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
