"""The cases of issue 28 as a new user meets them, through the real `edgeflow` command: what each prints (one
line), its exit code, and whether a user's folder `mydir` is still there byte for byte after every command that
takes --out.

    .venv/bin/python bench/user_mistakes.py [--keep DIR]

Needs root for the full disk (a 3 MB tmpfs; the case says so and is skipped otherwise), and ../shared for
nothing: every file is made here (tiny models, 8x8 photos, a .gif, a corrupt PNG, a .tflite LiteRT refuses).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def edgeflow(*argv: str, cwd: Path) -> tuple[int, str]:
    """Exit code and what the command printed last (its one line), run as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "edgeflow.cli", *argv], cwd=cwd, capture_output=True, text=True)
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    shown = errors[-1] if errors else (lines[-1] if lines else "")
    if "Traceback" in done.stderr:
        shown = f"TRACEBACK ({len(done.stderr.splitlines())} lines): {shown}"
    return done.returncode, shown


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): ("dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted(folder.rglob("*"))
    }


def make_files(work: Path) -> dict[str, Path]:
    import numpy as np
    import torch
    from conftest import TinyNet
    from PIL import Image
    from test_backends import _int8_tflite

    from edgeflow.export.onnx import export_onnx

    torch.manual_seed(0)
    files = {"tiny": export_onnx(TinyNet().eval(), input_shape=(1, 3, 16, 16), path=work / "tiny.onnx").path}

    class Two(TinyNet):
        def __init__(self) -> None:
            super().__init__(num_classes=2)

    files["two"] = export_onnx(Two().eval(), input_shape=(1, 3, 16, 16), path=work / "two.onnx").path
    rng = np.random.default_rng(0)

    def photo(path: Path, kind: str = "PNG") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path, kind)

    for name in ("cat", "dog"):
        for index in range(6):
            photo(work / "tutorial-set" / name / f"{index}.jpg", "JPEG")
    photo(work / "tutorial-set" / "dog" / "animated.gif", "GIF")
    for split, count in (("train", 6), ("val", 3)):
        for name in ("cat", "dog"):
            for index in range(count):
                photo(work / "imagenet-layout" / split / name / f"{index}.png")
    (work / "imagenet-layout" / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    for index in range(4):
        photo(work / "one-class" / "cat" / f"{index}.png")
    (work / "labels.txt").write_text("cat\ndog\n")
    files["tflite"] = _int8_tflite(work / "micro_int8.tflite", quantized_dimension=4)
    mydir = work / "mydir"
    (mydir / "photos").mkdir(parents=True)
    (mydir / "thesis.txt").write_text("four years of work\n")
    (mydir / "photos" / "cat.jpg").write_bytes(os.urandom(4096))
    files["mydir"] = mydir
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="make the files in DIR and keep them")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="edgeflow-mistakes-"))
    work.mkdir(parents=True, exist_ok=True)
    files = make_files(work)
    mydir = files["mydir"]
    before = snapshot(mydir)
    rows = []

    def case(name: str, *argv: str, touches_mydir: bool = False) -> None:
        code, shown = edgeflow(*argv, cwd=work)
        after = snapshot(mydir)
        kept = all(after.get(name) == digest for name, digest in before.items())
        added = sorted(set(after) - set(before))
        intact = ("every file byte for byte" if kept else "A FILE CHANGED OR WENT") if touches_mydir else ""
        if touches_mydir and added:
            intact += f"; added {', '.join(added)}"
        rows.append((name, "edgeflow " + " ".join(argv), code, shown, intact))

    tiny, two = str(files["tiny"]), str(files["two"])
    case("optimize into the user's folder", "optimize", tiny, "--recipe", "quick", "--out", "mydir", touches_mydir=True)
    case("search into the user's folder", "search", "mobilenet_v3_small", "--latency-ratio", "0.9", "--out", "mydir",
         touches_mydir=True)  # fmt: skip
    case("nightly into the user's folder", "nightly", "--out", "mydir", touches_mydir=True)
    case("export beside the user's files", "export", tiny, "--format", "openvino", "--out", "mydir",
         touches_mydir=True)  # fmt: skip
    case("quantize beside the user's files", "quantize", tiny, "--method", "ort-static", "--backend", "onnxruntime",
         "--subset-size", "16", "--out", "mydir", touches_mydir=True)  # fmt: skip
    (mydir / "tiny_int8.onnx").write_bytes(b"the user's own int8 model, saved over edgeflow's")
    before = snapshot(mydir)
    case("quantize over a user's file", "quantize", tiny, "--method", "ort-static", "--backend", "onnxruntime",
         "--subset-size", "16", "--out", "mydir", touches_mydir=True)  # fmt: skip
    for out in (".", "..", "~", "mydir/photos/.."):
        case(f"optimize --out {out}", "optimize", tiny, "--recipe", "quick", "--out", out)
    case("optimize --out holding the data", "optimize", tiny, "--recipe", "quick", "--data", "tutorial-set/dog",
         "--out", "tutorial-set")  # fmt: skip
    if os.geteuid() == 0:
        full = work / "full"
        full.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(full)], check=True)
        try:
            case("export to a full disk", "export", "mobilenet_v3_small", "--num-classes", "10", "--out", "full/x")
            case("optimize to a full disk", "optimize", "mobilenet_v3_small", "--recipe", "quick", "--out", "full/y")
            rows.append(("  left on the full disk", "ls -A full", 0, repr(os.listdir(full)), ""))
        finally:
            subprocess.run(["umount", "-l", str(full)], check=False)
    else:
        rows.append(("full disk", "(needs root to mount a 3 MB tmpfs)", "-", "skipped", ""))
    case("a .tflite LiteRT refuses", "profile", files["tflite"].name)
    code, _ = edgeflow("optimize", tiny, "--recipe", "quick", "--out", "run", cwd=work)
    modes = sorted({f"{stat.S_IMODE(path.stat().st_mode):o}" for path in (work / "run").rglob("*") if path.is_file()})
    umask = os.umask(0o022)
    os.umask(umask)
    rows.append((f"report files' modes (umask {umask:03o})", "stat run/**", code, " ".join(modes), ""))
    case("a .gif in a class folder", "eval", two, "--data", "tutorial-set", "--split", "all")
    case("eval of val/ with a broken train/ image", "eval", two, "--data", "imagenet-layout")
    case("labels naming 2 outputs, 1 folder", "eval", two, "--data", "one-class", "--labels", "labels.txt",
         "--split", "all")  # fmt: skip
    shutil.copy(ROOT / "tests/data/tf2onnx_resnet_opset9.onnx", work)
    case("MACs of a real tf2onnx opset-9 graph", "profile", "tf2onnx_resnet_opset9.onnx", "-n", "20")

    print("| case | command | exit | prints | mydir |")
    print("|---|---|---|---|---|")
    for name, command, code, shown, intact in rows:
        print(f"| {name} | `{command.replace(str(work) + '/', '')}` | {code} | {shown.replace('|', '/')} | {intact} |")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
