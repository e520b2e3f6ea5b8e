"""Where edgeflow writes (edgeflow/io.py): a folder it did not make is never emptied or replaced, files a user
added to its own folders survive, replacement is one step and leaves nothing behind, files get the umask's mode,
and the operating system's refusals (a full disk for real, a read-only filesystem, too many open files) are one
line naming the file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error
from typer.testing import CliRunner

from edgeflow.cli import app
from edgeflow.errors import OutputError
from edgeflow.export.onnx import export_onnx
from edgeflow.io import MARKER, staged_dir, write_text


def invoke(*argv: str):
    return CliRunner().invoke(app, list(argv))


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``, byte for byte (sha256), with its mode; symlinks by target."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.is_symlink():
            entries[relative] = "-> " + os.readlink(path)
        elif path.is_dir():
            entries[relative] = f"dir {stat.S_IMODE(path.stat().st_mode):o}"
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[relative] = f"{digest} {stat.S_IMODE(path.stat().st_mode):o}"
    return entries


def user_files(folder: Path) -> Path:
    """A folder of the user's own: a thesis, photos, a hidden file and a link."""
    (folder / "photos").mkdir(parents=True)
    (folder / "thesis.txt").write_text("four years of work\n")
    (folder / "photos" / "cat.jpg").write_bytes(os.urandom(2048))
    (folder / ".notes").write_text("private\n")
    (folder / "latest").symlink_to("photos/cat.jpg")
    return folder


def leftovers(parent: Path) -> list[str]:
    """Hidden staging or retired folders edgeflow would have left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import TinyNet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-io")
    return export_onnx(TinyNet().eval(), input_shape=(1, 3, 16, 16), path=folder / "tiny.onnx").path


def test_a_folder_edgeflow_did_not_make_is_never_replaced_or_emptied(tmp_path: Path, tiny_onnx: Path) -> None:
    """Every command that takes --out, pointed at the user's own folder: the commands that own their folder
    refuse it in one line before any work; export and quantize add their files beside the user's and refuse to
    overwrite one. Afterwards the user's files are all there, byte for byte."""
    mydir = user_files(tmp_path / "mydir")
    before = snapshot(mydir)
    owning = [
        ("optimize", str(tiny_onnx), "--recipe", "quick", "--out", str(mydir)),
        ("search", "mobilenet_v3_small", "--latency-ratio", "0.9", "--out", str(mydir)),
        ("nightly", "--out", str(mydir)),
    ]
    for argv in owning:
        assert_one_line_error(invoke(*argv), f"{mydir} holds files edgeflow did not write (.notes, latest, photos,")
        assert snapshot(mydir) == before, argv
    # export adds its file; the user's stay as they were
    result = invoke("export", str(tiny_onnx), "--format", "openvino", "--out", str(mydir))
    assert result.exit_code == 0, result.output
    assert {"tiny.xml", "tiny.bin", MARKER} <= {path.name for path in mydir.iterdir()}
    assert {key: value for key, value in snapshot(mydir).items() if key in before} == before
    # again: edgeflow's own files are replaced, the user's never
    assert invoke("export", str(tiny_onnx), "--format", "openvino", "--out", str(mydir)).exit_code == 0
    marker = json.loads((mydir / MARKER).read_text())
    assert sorted(marker["entries"]) == ["tiny.bin", "tiny.xml"] and marker["made_here"] is False
    # files added by export do not make the user's folder edgeflow's: the owning commands still refuse it
    for out in (str(mydir), str(mydir / "photos" / "..")):
        result = invoke("optimize", str(tiny_onnx), "--recipe", "quick", "--out", out)
        assert_one_line_error(result, "holds files edgeflow did not write (.notes, latest, photos, thesis.txt)")
    # a file of the user's put since under a name edgeflow wrote is the user's
    (mydir / "tiny.xml").write_text("<the user's own edit/>")
    kept = snapshot(mydir)
    result = invoke("export", str(tiny_onnx), "--format", "openvino", "--out", str(mydir))
    assert_one_line_error(result, f"{mydir} already holds tiny.xml, which edgeflow did not write")
    assert snapshot(mydir) == kept
    # a user's file under the name the command would write: refused by name, nothing moved
    theirs = user_files(tmp_path / "theirs")
    (theirs / "tiny_int8.onnx").write_bytes(b"the user's own quantized model")
    before = snapshot(theirs)
    result = invoke("quantize", str(tiny_onnx), "--data", "digits", "--method", "ort-static", "--backend",
                    "onnxruntime", "--subset-size", "16", "--out", str(theirs))  # fmt: skip
    assert_one_line_error(result, f"{theirs} already holds tiny_int8.onnx, which edgeflow did not write")
    assert snapshot(theirs) == before
    assert leftovers(theirs) == [] and leftovers(tmp_path) == []


def test_folders_that_are_never_an_output_folder(tmp_path: Path, tiny_onnx: Path, monkeypatch) -> None:
    """--out ., .., ~, an ancestor of the current folder, a folder holding the model or the data set read, and
    a folder inside the data set: one line each, nothing written anywhere."""
    home, work = tmp_path / "home", tmp_path / "work" / "sub"
    work.mkdir(parents=True)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    models = tmp_path / "models"
    models.mkdir()
    model = models / "tiny.onnx"
    shutil.copy(tiny_onnx, model)
    photos = tmp_path / "photos"
    for name in ("a", "b"):
        (photos / name).mkdir(parents=True)
    before = snapshot(tmp_path)
    cases = [
        (".", "is the current folder or holds it"),
        ("..", "is the current folder or holds it"),
        (str(tmp_path / "work"), "is the current folder or holds it"),
        ("~", "is your home folder or holds it"),
        (str(models), f"holds {model}, which this run reads"),
        (str(tmp_path), "is the current folder or holds it"),
    ]
    for out, message in cases:
        assert_one_line_error(invoke("optimize", str(model), "--recipe", "quick", "--out", out), message)
    assert_one_line_error(invoke("search", str(model), "--latency-ratio", "0.9", "--out", "."), "current folder")
    assert_one_line_error(invoke("nightly", "--out", ".."), "current folder")
    data_cases = [
        (str(tmp_path / "photos-parent"), str(tmp_path / "photos-parent" / "photos"), "which this run reads"),
        (str(photos / "report"), str(photos), "is inside"),
    ]
    (tmp_path / "photos-parent").mkdir()
    shutil.copytree(photos, tmp_path / "photos-parent" / "photos")
    before = snapshot(tmp_path)
    for out, data, message in data_cases:
        result = invoke("optimize", str(model), "--recipe", "quick", "--data", data, "--out", out)
        assert_one_line_error(result, message)
    assert snapshot(tmp_path) == before


def test_replacing_an_edgeflow_folder_keeps_what_the_user_added(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with staged_dir(out) as stage:
        write_text(stage / "report.json", "{}")
        write_text(stage / "model_int8.onnx", "first run")
        (stage / "bundle").mkdir()
        write_text(stage / "bundle" / "model.onnx", "first")
    assert sorted(json.loads((out / MARKER).read_text())["entries"]) == ["bundle", "model_int8.onnx", "report.json"]
    user_files(out / "mine")  # the user's notes and photos, inside edgeflow's folder
    (out / "notes.md").write_text("what I saw\n")
    inode = (out / "mine" / "photos" / "cat.jpg").stat().st_ino
    theirs = {key: value for key, value in snapshot(out).items() if key.startswith(("mine", "notes"))}
    with staged_dir(out) as stage:
        write_text(stage / "report.json", '{"second": true}')
    assert {key: value for key, value in snapshot(out).items() if key.startswith(("mine", "notes"))} == theirs
    assert (out / "mine" / "photos" / "cat.jpg").stat().st_ino == inode  # linked, never copied through memory
    assert not (out / "model_int8.onnx").exists() and not (out / "bundle").exists()  # edgeflow's old files go
    assert json.loads((out / "report.json").read_text()) == {"second": True}
    # a user's file under a name the new output writes: refused by name, the folder as it was
    (out / "search.json").write_text("the user's")
    before = snapshot(out)
    with pytest.raises(OutputError, match="holds search.json, which edgeflow did not write"):
        with staged_dir(out) as stage:
            write_text(stage / "search.json", "{}")
    assert snapshot(out) == before
    # a failed run leaves the folder as it was, and nothing beside it
    with pytest.raises(RuntimeError, match="a step failed"):
        with staged_dir(out) as stage:
            write_text(stage / "report.json", "{}")
            raise RuntimeError("a step failed")
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_a_folder_written_before_the_marker_is_still_edgeflows(tmp_path: Path) -> None:
    """Known by what edgeflow leaves (report.json): the entries written again are replaced, others kept."""
    out = tmp_path / "old-report"
    out.mkdir()
    (out / "report.json").write_text('{"environment": {"edgeflow": "0.0.9"}}')
    (out / "notes.md").write_text("mine")
    with staged_dir(out) as stage:
        write_text(stage / "report.json", "{}")
    assert (out / "report.json").read_text() == "{}" and (out / "notes.md").read_text() == "mine"


def test_files_and_folders_get_the_umask_mode(tmp_path: Path, tiny_onnx: Path) -> None:
    """A report folder (the report, the models, the bundle) and an export, under umask 022 and 027."""
    for umask in (0o022, 0o027):
        previous = os.umask(umask)
        try:
            out = tmp_path / f"run-{umask:o}"
            result = invoke("optimize", str(tiny_onnx), "--recipe", "quick", "--out", str(out), "--json")
            assert result.exit_code == 0, result.output
            exported = invoke("export", str(tiny_onnx), "--format", "openvino", "--out", str(tmp_path / f"x{umask:o}"))
            assert exported.exit_code == 0, exported.output
        finally:
            os.umask(previous)
        for folder in (out, tmp_path / f"x{umask:o}"):
            modes = {
                str(path.relative_to(tmp_path)): stat.S_IMODE(path.stat().st_mode)
                for path in [folder, *folder.rglob("*")]
            }
            expected = {name: (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask for name in modes}
            assert modes == expected, {name: f"{mode:o}" for name, mode in modes.items() if mode != expected[name]}
        assert {"report.json", "report.html", "model_fp32.onnx", "model_fp32.xml", "bundle"} <= {
            path.name for path in out.iterdir()
        }


@contextlib.contextmanager
def small_filesystem(where: Path, *, size: str, options: str = ""):
    """A tmpfs of ``size`` mounted at ``where`` (root only), unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is made as a small tmpfs: needs root and mount")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, tiny_onnx: Path) -> None:
    """Real full filesystems: torch's ONNX writer (an OSError), OpenVINO's and NNCF's (their own exceptions)
    and a report folder; one line naming the file and 'no space left on device', nothing half-written."""
    with small_filesystem(tmp_path / "full", size="600k") as full:
        result = invoke("export", "mobilenet_v3_small", "--resolution", "32", "--num-classes", "10",
                        "--out", str(full / "x"))  # fmt: skip
        assert_one_line_error(result, f"cannot write {full / 'x' / 'mobilenet_v3_small.onnx'}: no space left on device")
        assert list(full.iterdir()) == []
        result = invoke("optimize", "mobilenet_v3_small", "--recipe", "quick", "--out", str(full / "y"))
        lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"error: cannot write {full / 'y'}/") and "no space left on device" in lines[0]
        assert "Traceback" not in result.output
        assert list(full.iterdir()) == []
    with small_filesystem(tmp_path / "tiny", size="64k") as full:
        filler = full / "filler"
        with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:  # fill it up, then free one page: room to start the IR, not to finish it
                handle.write(b"\0" * 4096)
        os.truncate(filler, filler.stat().st_size - 4096)
        result = invoke("export", str(tiny_onnx), "--format", "openvino", "--out", str(full / "ir"))
        assert_one_line_error(result, f"cannot write {full / 'ir'}/")
        assert "no space left on device" in result.output
        assert sorted(path.name for path in full.iterdir()) == ["filler"]


def test_a_failed_swap_leaves_the_folder_as_it_was_and_nothing_beside_it(tmp_path: Path) -> None:
    """A folder the system will not let go (a mount point: EBUSY) cannot be swapped: one error, the folder as it
    was, no staging or retired folder left beside it."""
    with small_filesystem(tmp_path / "report", size="1m") as out:
        with pytest.raises(OutputError, match=r"cannot replace .*report: .*busy.*; it is as it was"):
            with staged_dir(out) as stage:
                write_text(stage / "report.json", "{}")
        assert list(out.iterdir()) == [] and leftovers(tmp_path) == []


def test_a_read_only_filesystem_is_one_line(tmp_path: Path, tiny_onnx: Path) -> None:
    with small_filesystem(tmp_path / "ro", size="1m", options=",ro") as read_only:
        result = invoke("export", str(tiny_onnx), "--format", "openvino", "--out", str(read_only / "x"))
        assert_one_line_error(result, f"{read_only / 'x'}")
        assert "read-only" in result.output.lower()


@pytest.mark.slow  # a process importing every runtime (~12 s)
def test_too_many_open_files_is_one_line(tmp_path: Path, tiny_onnx: Path) -> None:
    """In a process whose open-file limit is what it already holds (its imports done), the next file edgeflow
    opens is refused: one line naming the file and the cause, exit 2."""
    script = f"""
import os, resource, sys
import gc
import edgeflow.api, edgeflow.cli, onnx, openvino  # what the command imports, before the limit
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    edgeflow.cli.app(["export", "--help"], standalone_mode=False)  # and what typer imports to parse it
gc.collect()  # nothing left to close its file later and free a number under the limit
highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:  # the free numbers below the limit taken too
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
sys.argv = ["edgeflow", "export", {str(tiny_onnx)!r}, "--format", "openvino", "--out", {str(tmp_path / "x")!r}]
try:
    edgeflow.cli.main()
finally:  # torch's own exit handlers import modules: give the files back before the interpreter ends
    for fd in held:
        os.close(fd)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "too many open files" in lines[0], lines
    assert str(tiny_onnx) in lines[0] and not (tmp_path / "x").exists()
