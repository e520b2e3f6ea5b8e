"""Batch-1 latency of the torchvision CNNs on a CUDA GPU with torch alone (no edgeflow import, so it runs
on a bare GPU machine): eager and CUDA graphs, fp32 and fp16; medians of CUDA-event timings.

A check of devices/nvidia-gpu.yaml's roofline where TensorRT is not installed: compare its output with
`edgeflow`'s roofline estimates for the same models (bench/estimates.py prints those for `cpu`).

    python3 bench/gpu_torch_timing.py [--resolution 224] [--iterations 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics

import torch
import torchvision

MODELS = ("mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2", "efficientnet_b0", "resnet18", "resnet50",
          "mnasnet1_0", "squeezenet1_1")  # fmt: skip


def time_cuda(run, iterations: int) -> float:
    """Median ms over ``iterations`` single runs, each timed with CUDA events."""
    for _ in range(20):
        run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def graphed(module, example):
    static = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            module(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(static)
    return graph.replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    rows = []
    with torch.inference_mode():
        for name in MODELS:
            for dtype in (torch.float32, torch.float16):
                module = getattr(torchvision.models, name)(num_classes=1000).eval().cuda().to(dtype)
                example = torch.randn(1, 3, args.resolution, args.resolution, device="cuda", dtype=dtype)
                eager = time_cuda(functools.partial(module, example), args.iterations)
                graph = time_cuda(graphed(module, example), args.iterations)
                kind = str(dtype).split(".")[-1]
                rows.append({"model": name, "dtype": kind, "eager_ms": eager, "graph_ms": graph})
                print(f"{name:20s} {kind:8s} eager {eager:7.3f} ms  cuda graph {graph:7.3f} ms", flush=True)
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version(), "resolution": args.resolution, "rows": rows}  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    print(json.dumps({key: value for key, value in result.items() if key != "rows"}))


if __name__ == "__main__":
    main()
