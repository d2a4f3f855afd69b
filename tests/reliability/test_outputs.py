"""Where commands write: never onto a run's own files, never into a directory given as a
file (or a file given as a directory), and an output that cannot be written — no
permission, a read-only file system, a missing parent, a path under a file, a full disk —
is one line naming the path, found before any work where it can be."""

import contextlib
import errno
import os
import pwd
import shutil
import tempfile

import pytest

from reliability_helpers import TINY, one_line, refused, run_cli, snapshot


# ---------------------------------------------------------------------- train --out
def _dir_with(*names):
    def make(path):
        os.makedirs(path)
        for name in names:
            with open(os.path.join(path, name), "w") as f:
                f.write('{"epoch": 1}\n')
    return make


TRAIN_OUTS = {
    "/proc/x": (None, "cannot create /proc/x: /proc is not writable"),
    "under a file": (lambda p: open(os.path.dirname(p), "w").close(), "is a file, not a directory"),
    "an existing file": (lambda p: open(p, "w").close(), "exists and is not a directory"),
    "an old metrics.jsonl": (_dir_with("metrics.jsonl"), "holds metrics.jsonl but no config.json"),
    "an old eval.json": (_dir_with("eval.json", "samples.png"), "holds eval.json, samples.png but no config.json"),
    "a foreign config.json": (_dir_with("config.json"), "holds a config.json that is not a pyro-vae run config"),
}


@pytest.mark.parametrize("kind", sorted(TRAIN_OUTS))
def test_train_refuses_an_out_it_could_damage(tmp_path, capsys, kind):
    make, fragment = TRAIN_OUTS[kind]
    out = "/proc/x" if kind == "/proc/x" else str(tmp_path / "parent" / "run")
    if make is not None:
        if kind != "under a file":
            os.makedirs(tmp_path / "parent")
        make(out)
    before = snapshot(tmp_path)
    refused(capsys, ["train", "--epochs", "1", *TINY, "--out", out], fragment)
    assert snapshot(tmp_path) == before


def test_train_refuses_an_existing_run(trained_run, capsys):
    before = snapshot(trained_run)
    refused(capsys, ["train", "--epochs", "1", *TINY, "--out", trained_run], "already holds a run", "--resume")
    assert snapshot(trained_run) == before


# ---------------------------------------------------------------------- sample --out
@pytest.mark.parametrize("name", ["checkpoint.pt", "config.json", "metrics.jsonl", "eval.json"])
def test_sample_never_writes_onto_a_runs_own_files(trained_run, capsys, name):
    before = snapshot(trained_run)
    refused(capsys, ["sample", trained_run, "--out", os.path.join(trained_run, name)], f"the run's own {name}")
    assert snapshot(trained_run) == before


@pytest.mark.parametrize("name", ["loss.png", "reconstructions.png"])
def test_sample_never_replaces_a_runs_figures(trained_run, capsys, name):
    before = snapshot(trained_run)
    refused(capsys, ["sample", trained_run, "--out", os.path.join(trained_run, name)], f"is the {name} of the run")
    assert snapshot(trained_run) == before


def test_sample_never_replaces_another_runs_samples(trained_run, run_copy, capsys):
    before = snapshot(run_copy)
    refused(capsys, ["sample", trained_run, "--out", os.path.join(run_copy, "samples.png")],
            "is the samples.png of the run")
    assert snapshot(run_copy) == before


SAMPLE_OUTS = {
    "a directory": (lambda t: t, "is a directory; give a file name"),
    "a missing parent": (lambda t: os.path.join(t, "no", "such", "s.png"), "does not exist"),
    "under a file": (lambda t: os.path.join(t, "file", "s.png"), "is a file, not a directory"),
    "not a png": (lambda t: os.path.join(t, "s.jpg"), "must name a .png file"),
}


@pytest.mark.parametrize("kind", sorted(SAMPLE_OUTS))
def test_sample_refuses_an_out_it_cannot_write(trained_run, tmp_path, capsys, kind):
    (tmp_path / "file").write_text("x")
    path, fragment = SAMPLE_OUTS[kind]
    before = snapshot(tmp_path)
    refused(capsys, ["sample", trained_run, "--out", path(str(tmp_path))], fragment)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- posterior --out
@pytest.mark.parametrize("kind", ["the run", "its checkpoint", "another run's posterior", "under a file"])
def test_posterior_refuses_an_out_it_could_damage(trained_run, run_copy, tmp_path, capsys, kind):
    (tmp_path / "file").write_text("x")
    out, fragment = {
        "the run": (trained_run, "is a run directory"),
        "its checkpoint": (os.path.join(trained_run, "checkpoint.pt"), "exists and is not a directory"),
        "another run's posterior": (os.path.join(run_copy, "posterior"), "posterior analysis of another run"),
        "under a file": (str(tmp_path / "file" / "p"), "is a file, not a directory"),
    }[kind]
    before, other = snapshot(trained_run), snapshot(run_copy)
    refused(capsys, ["posterior", trained_run, "--out", out, "--draws", "4", "--warmup", "0"], fragment)
    assert snapshot(trained_run) == before and snapshot(run_copy) == other


# ---------------------------------------------------------------------- unwritable run directories
def deny(monkeypatch, directory, code):
    """Creating files under ``directory`` fails with ``code`` (as on a read-only directory
    or file system): every write of pyro-vae and every check of one creates a file through
    ``tempfile.mkstemp``."""
    real = tempfile.mkstemp
    directory = os.path.abspath(directory)

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(directory):
            raise OSError(code, os.strerror(code), dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def no_work(monkeypatch):
    """Fail the test if a command starts its real work (loading a model)."""
    import inference.evaluate
    import inference.posterior
    import inference.sample
    import inference.train  # noqa: F401  (imported before the patch, so that undo restores them)

    def forbidden(*args, **kwargs):
        raise AssertionError("the command did work before finding that it cannot write")

    for module in ("restore", "evaluate", "sample", "posterior", "train"):
        monkeypatch.setattr(f"inference.{module}.load_run", forbidden)


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")])
@pytest.mark.parametrize("cmd", ["evaluate", "sample", "posterior", "resume"])
def test_an_unwritable_run_is_refused_before_any_work(run_copy, capsys, monkeypatch, cmd, code, reason):
    argv = {"evaluate": ["evaluate", run_copy], "sample": ["sample", run_copy],
            "posterior": ["posterior", run_copy], "resume": ["train", "--resume", "--out", run_copy, "--epochs", "3"]}
    before = snapshot(run_copy)
    deny(monkeypatch, run_copy, code)
    no_work(monkeypatch)
    line = refused(capsys, argv[cmd], reason)
    assert run_copy in line
    assert snapshot(run_copy) == before


def test_a_full_disk_when_writing_eval_json_is_one_line(run_copy, capsys, monkeypatch):
    import inference.io as io

    real = io.os.fsync

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = snapshot(run_copy)
    monkeypatch.setattr(io.os, "fsync", fsync)
    refused(capsys, ["evaluate", run_copy, "--iwae-samples", "2", "--no-progress"],
            f"cannot write {os.path.join(run_copy, 'eval.json')}: no space left on the device")
    monkeypatch.setattr(io.os, "fsync", real)
    assert snapshot(run_copy) == before  # the old eval.json, and no temporary file


@contextlib.contextmanager
def as_another_user():
    """Root may write into any directory: drop to "nobody" (effective uid) meanwhile."""
    if os.geteuid() != 0:
        yield
        return
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no user 'nobody' to be")
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
@pytest.mark.parametrize("cmd", ["evaluate", "sample", "resume"])
def test_a_really_read_only_run_directory(trained_run, capsys, cmd):
    """chmod 555, for real (as "nobody" when the tests run as root, who may write anyway)."""
    base = tempfile.mkdtemp(prefix="pyro-vae-ro-")  # reachable by another user, unlike tmp_path
    run = os.path.join(base, "run")
    try:
        shutil.copytree(trained_run, run)
        os.chmod(base, 0o755)
        for name in os.listdir(run):
            os.chmod(os.path.join(run, name), 0o644)
        os.chmod(run, 0o555)
        before = snapshot(run)
        argv = {"evaluate": ["evaluate", run], "sample": ["sample", run],
                "resume": ["train", "--resume", "--out", run, "--epochs", "3"]}[cmd]
        with as_another_user():
            code, out, err = run_cli(capsys, *argv)
        assert code == 2, (out, err)
        assert f"cannot write to {run}: permission denied" in one_line(err)
        assert snapshot(run) == before
    finally:
        os.chmod(run, 0o755)
        shutil.rmtree(base)


# ---------------------------------------------------------------------- a run's other figures
@pytest.mark.parametrize("argv, target, fragment", [
    (["sample", "RUN", "--interpolate", "2", "3"], "interpolation_0_5.png", "the run's own interpolation_0_5.png"),
    (["sample", "RUN"], "interpolation_0_5.png", "the run's own interpolation_0_5.png"),
    (["sample", "RUN"], "posterior/marginals_0.png", "inside the posterior analysis of the run"),
    (["sample", "RUN", "--interpolate", "0", "1"], "posterior/marginals_0.png", "inside the posterior analysis"),
    (["compare", "RUN", "--figure"], "posterior/marginals_0.png", "--figure"),
    (["compare", "RUN", "--out"], "posterior/table.csv", "inside the posterior analysis of the run"),
    (["compare", "RUN", "--figure"], "tb/curves.png", "inside the TensorBoard folder of the run"),
])
def test_no_command_writes_onto_another_runs_figures(trained_run, run_copy, capsys, argv, target, fragment):
    """Interpolations and the posterior analysis belong to their run as much as its
    checkpoint does: another command (or this one with other indices) may not replace them."""
    os.makedirs(os.path.join(run_copy, "posterior"), exist_ok=True)
    os.makedirs(os.path.join(run_copy, "tb"), exist_ok=True)
    for name in ("interpolation_0_5.png", "posterior/marginals_0.png", "posterior/table.csv", "tb/curves.png"):
        with open(os.path.join(run_copy, name), "wb") as f:
            f.write(b"figure")
    before = snapshot(run_copy)
    argv = [trained_run if a == "RUN" else a for a in argv]
    if argv[-1] not in ("--figure", "--out"):
        argv.append("--out")
    refused(capsys, [*argv, os.path.join(run_copy, target)], fragment)
    assert snapshot(run_copy) == before


def test_sample_rewrites_its_own_interpolation_only(run_copy, capsys):
    refused(capsys, ["sample", run_copy, "--interpolate", "0", "1", "--out",
                     os.path.join(run_copy, "interpolation_0_3.png")], "the run's own interpolation_0_3.png")
    assert run_cli(capsys, "sample", run_copy, "--interpolate", "0", "1")[0] == 0
    assert run_cli(capsys, "sample", run_copy, "--interpolate", "0", "1")[0] == 0  # its own: rewritten
