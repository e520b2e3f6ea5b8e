"""The benchmark agent copied to a device and run there with the device's Python and runtime.

It must stand alone: the standard library, NumPy and the runtime it times, nothing from edgeflow but
``host_state.py`` (standard library only), copied beside it, which watches the device around each timing.
It prints one JSON object on stdout; on a problem it prints {"error": "..."} and exits 3.

    python3 agent.py probe
    python3 agent.py time --model m.onnx --runtime onnxruntime|openvino|litert [--warmup 20 --iterations 500 ...]
                          [--threads N] [--inputs x.npy --outputs logits.npy]
    python3 agent.py in-turn --models a.onnx b.onnx --runtime openvino [--rounds 5 --max-seconds 0.5]

edgeflow drives it from ``edgeflow/targets/agent_client.py``.
"""

import argparse
import contextlib
import ctypes
import importlib
import json
import os
import platform
import re
import resource
import sys
import time

# On a device, host_state.py lies beside this file (put on the path by hand: `python -I` leaves it off); in
# edgeflow's tree it is edgeflow.profiling's, and the tree's folder stays off the path (its module names are
# generic: base, client, local).
_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.exists(os.path.join(_HERE, "host_state.py")):
    sys.path.insert(0, _HERE)
    import host_state
else:  # pragma: no cover - imported from edgeflow's tree
    from edgeflow.profiling import host_state

RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "litert": "ai_edge_litert"}


class AgentError(Exception):
    """A problem the agent names itself (printed as its message alone)."""


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else exc.__class__.__name__


def _openvino_cause(exc):
    """OpenVINO's first lines name the C++ source that raised; its last the cause (edgeflow's runtime_message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [exc.__class__.__name__])[-1]


def _onnxruntime_cause(exc):
    """ONNX Runtime's first line without its status code and the path (edgeflow's session_refusal)."""
    line = _first_line(exc)
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:Load model from .*? failed:)?\s*", "", line) or line


@contextlib.contextmanager
def _loading(runtime, model, cause=_first_line):
    """Around the runtime's own load, compile or allocate call: its refusal becomes one line naming the file
    (edgeflow.backends.base.loading's twin; the agent stands alone)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - whatever the runtime raises, it refused this file
        raise AgentError(f"{runtime} cannot load {model}: {cause(exc)[:300]}") from exc


def _version(module_name):
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a missing or broken runtime is simply absent
        return None
    return str(getattr(module, "__version__", None) or getattr(module, "get_version", lambda: "unknown")())


#: aarch64 features the runtimes choose int8 and fp16 kernels by: (getauxval's AT_HWCAP or AT_HWCAP2, bit)
_HWCAP = {
    "asimd": (16, 1), "fphp": (16, 9), "asimdhp": (16, 10), "asimddp": (16, 20), "sve": (16, 22),
    "asimdfhm": (16, 23), "sve2": (26, 1), "i8mm": (26, 13), "bf16": (26, 14), "sme": (26, 23),
}  # fmt: skip
#: x86 flags they choose by (/proc/cpuinfo; edgeflow.environment.cpu_description's, the agent stands alone)
_X86 = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]


def _isa():
    """The CPU features the runtimes' kernels are chosen by, as this machine's kernel reports them (on aarch64 its
    hardware capabilities: under an emulator, the emulated CPU's); [] where they cannot be read."""
    if sys.platform.startswith("linux") and platform.machine() in ("aarch64", "arm64"):
        libc = ctypes.CDLL(None)
        libc.getauxval.restype, libc.getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
        return [name for name, (kind, bit) in _HWCAP.items() if libc.getauxval(kind) >> bit & 1]
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(line for line in cpuinfo if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return []
    return [flag for flag in _X86 if flag in flags]


def probe():
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "processor": platform.processor(),
        "isa": _isa(),
        "numpy": _version("numpy"),
        "runtimes": {name: _version(module) for name, module in RUNTIMES.items()},
    }


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _onnxruntime(model, threads):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    with _loading("ONNX Runtime", model, _onnxruntime_cause):
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [dim if isinstance(dim, int) else 1 for dim in feed.shape]

    def runner(batch):
        binding = session.io_binding()
        binding.bind_cpu_input(feed.name, batch)
        binding.bind_output(session.get_outputs()[0].name)

        def once():
            session.run_with_iobinding(binding)

        return once

    def infer(batch):
        return session.run(None, {feed.name: batch})[0]

    settings = {"threads": threads, "providers": session.get_providers()}
    return shape, runner, infer, ort.__version__, settings, np


def _openvino(model, threads):
    import numpy as np
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    with _loading("OpenVINO", model, _openvino_cause):
        compiled = core.compile_model(model, "CPU", config)
    shape = list(compiled.inputs[0].get_shape())
    request = compiled.create_infer_request()

    def runner(batch):
        request.set_input_tensor(ov.Tensor(batch))

        def once():
            request.infer()

        return once

    def infer(batch):
        return np.array(request.infer({0: batch})[compiled.outputs[0]])

    settings = {"threads": threads, "execution_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT"))}
    return shape, runner, infer, ov.get_version(), settings, np


def _litert(model, threads):
    """LiteRT's interpreter (ai-edge-litert, XNNPACK by default); an NHWC model is fed the NCHW images
    transposed, integer inputs and outputs through their quantization (as edgeflow.backends.litert does)."""
    import ai_edge_litert
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    if not threads:  # explicit, as on the host: one a core
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with _loading("LiteRT", model):
        interpreter = Interpreter(model_path=model, num_threads=threads)
        interpreter.allocate_tensors()
    feed, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    native = [int(dim) for dim in feed["shape"]]
    nhwc = len(native) == 4 and native[3] in (1, 3) and native[1] not in (1, 3)
    shape = [native[0], native[3], native[1], native[2]] if nhwc else native

    def to_model(batch):
        data = np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) if nhwc else batch
        scale, zero = feed["quantization"]
        if np.issubdtype(feed["dtype"], np.integer) and scale:
            info = np.iinfo(feed["dtype"])
            data = np.clip(np.round(data / scale) + zero, info.min, info.max)
        return data.astype(feed["dtype"])

    def runner(batch):
        interpreter.set_tensor(feed["index"], to_model(batch))
        return interpreter.invoke

    def infer(batch):
        interpreter.set_tensor(feed["index"], to_model(batch))
        interpreter.invoke()
        result = interpreter.get_tensor(output["index"])
        scale, zero = output["quantization"]
        if np.issubdtype(output["dtype"], np.integer) and scale:
            result = (result.astype(np.float32) - zero) * scale
        return result

    settings = {"threads": threads, "delegate": "XNNPACK", "input_layout": "NHWC" if nhwc else "NCHW"}
    return shape, runner, infer, ai_edge_litert.__version__, settings, np


def _builder(runtime):
    """The loader of ``runtime``'s models, or an AgentError saying why it cannot time here."""
    build = {"onnxruntime": _onnxruntime, "openvino": _openvino, "litert": _litert}.get(runtime)
    if build is None:
        raise AgentError(f"the agent cannot time with {runtime}")
    if _version(RUNTIMES[runtime]) is None:
        raise AgentError(f"{runtime} is not installed for {sys.executable}")
    return build


def _timing_loop(once, *, warmup, iterations, min_iterations, max_seconds):
    """Per-run times (ns) after ``warmup`` runs: at most ``iterations``, stopping after ``max_seconds``
    once ``min_iterations`` are in (the same loop as edgeflow.profiling.time_runner)."""
    clock = time.perf_counter_ns
    for _ in range(warmup):
        once()
    samples = []
    loop_start = clock()
    budget = int(max_seconds * 1e9)
    while len(samples) < iterations:
        before = clock()
        once()
        after = clock()
        samples.append(after - before)
        if len(samples) >= min(min_iterations, iterations) and after - loop_start >= budget:
            break
    return samples


def _batched(infer, images, *, batch, np):
    """Outputs for every image, fed in the model's batch (a fixed batch above 1 too: the last batch is filled
    with copies of its last image, whose outputs are dropped), one row of outputs per image."""
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        kept = len(chunk)
        if kept < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - kept, axis=0)])
        outputs.append(np.asarray(infer(np.ascontiguousarray(chunk))).reshape(batch, -1)[:kept])
    return outputs


def time_model(args):
    load_before = _rss_mb()
    shape, runner, infer, version, settings, np = _builder(args.runtime)(args.model, args.threads)
    load_peak = _rss_mb()
    batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    once = runner(batch)
    clock = time.perf_counter_ns
    start = clock()
    once()
    cold_ns = clock() - start
    samples, state = host_state.watched(
        lambda: _timing_loop(once, warmup=args.warmup, iterations=args.iterations,
                             min_iterations=args.min_iterations, max_seconds=args.max_seconds),
        busy_share=args.busy_share, retries=args.busy_retries,
    )  # fmt: skip
    result = {
        "runtime": args.runtime,
        "version": str(version),
        "input_shape": shape,
        "samples_ns": samples,
        "cold_ns": cold_ns,
        "warmup": args.warmup,
        "rss_before_mb": round(load_before, 2),
        "load_peak_mb": round(max(0.0, load_peak - load_before), 2),
        "run_peak_mb": round(max(0.0, _rss_mb() - load_before), 2),
        "settings": settings,
        "machine": platform.machine(),
        "state": state,
    }
    if args.inputs:
        images = np.load(args.inputs, allow_pickle=False)
        logits = np.concatenate(_batched(infer, images, batch=shape[0], np=np))
        np.save(args.outputs, logits.astype(np.float32), allow_pickle=False)
        result["outputs"] = int(len(logits))
    return result


def time_in_turn(args):
    """Several models timed one after another, round after round: each one's p50 (ms) in every round.

    The twin, on a device, of ``edgeflow.profiling.in_turn.time_in_turn`` (the agent stands alone, so the
    loop is written again here; keep the two alike: same rounds, same order, same per-round p50)."""
    build = _builder(args.runtime)
    runs, version = {}, None
    for model in args.models:
        shape, runner, _infer, version, _settings, np = build(model, args.threads)
        runs[model] = runner(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    per_round = {model: [] for model in args.models}
    noisy = {model: 0 for model in args.models}
    for _ in range(args.rounds):
        for model, once in runs.items():
            loop, state = host_state.watched(
                lambda once=once: _timing_loop(once, warmup=args.warmup, iterations=10**9,
                                               min_iterations=args.min_iterations, max_seconds=args.max_seconds),
                busy_share=args.busy_share, retries=args.busy_retries,
            )  # fmt: skip
            samples = sorted(loop)
            per_round[model].append(samples[len(samples) // 2] / 1e6)
            noisy[model] += state["noisy"]
    return {
        "runtime": args.runtime, "version": str(version), "p50_ms": per_round, "noisy_rounds": noisy,
        "machine": platform.machine(),
    }  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description="edgeflow's benchmark agent")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("probe")
    timing = commands.add_parser("time")
    timing.add_argument("--model", required=True)
    timing.add_argument("--runtime", required=True)
    timing.add_argument("--warmup", type=int, default=20)
    timing.add_argument("--iterations", type=int, default=500)
    timing.add_argument("--min-iterations", type=int, default=10)
    timing.add_argument("--max-seconds", type=float, default=5.0)
    timing.add_argument("--threads", type=int, default=None)
    timing.add_argument("--inputs", default=None)
    timing.add_argument("--outputs", default=None)
    in_turn = commands.add_parser("in-turn")
    in_turn.add_argument("--models", nargs="+", required=True)
    in_turn.add_argument("--runtime", required=True)
    in_turn.add_argument("--rounds", type=int, default=5)
    in_turn.add_argument("--warmup", type=int, default=10)
    in_turn.add_argument("--min-iterations", type=int, default=10)
    in_turn.add_argument("--max-seconds", type=float, default=0.5)
    in_turn.add_argument("--threads", type=int, default=None)
    for command in (timing, in_turn):
        command.add_argument("--busy-share", type=float, default=host_state.BUSY_SHARE)
        command.add_argument("--busy-retries", type=int, default=host_state.BUSY_RETRIES)
    args = parser.parse_args(argv)
    try:
        commands_run = {
            "probe": lambda: probe(),
            "time": lambda: time_model(args),
            "in-turn": lambda: time_in_turn(args),
        }
        result = commands_run[args.command]()
    except Exception as exc:  # noqa: BLE001 - reported to the host as one line
        message = str(exc) if isinstance(exc, AgentError) else f"{exc.__class__.__name__}: {exc}"
        print(json.dumps({"error": (message.splitlines() or ["no message"])[0]}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
