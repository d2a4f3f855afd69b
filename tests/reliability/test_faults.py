"""Faults during training: ``kill -9`` in the middle of a checkpoint write, SIGINT, SIGTERM,
a NaN loss, a full disk. After each, the last checkpoint loads, nothing half-written is
left behind (or the next command removes it), the one line on stderr says where the run
stands and how to continue, and continuing reproduces a straight run bit for bit."""

import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from inference import signals
from inference.checkpoint import load_checkpoint
from inference.rundir import check_new_run
from pyro_vae.infer.trainer import Trainer
from reliability_helpers import (EPOCHS, SELECTED, TINY, assert_same_training, checkpoint, one_line, refused, run_cli,
                                 subprocess_cli, temp_files)


def wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (status {proc.returncode}) before the fault: {err[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.01)


def resume_equals_straight(capsys, run, straight):
    """Continue the run to EPOCHS epochs; it must equal the straight run bit for bit."""
    code, out, err = run_cli(capsys, "train", "--resume", "--out", run, "--epochs", EPOCHS)
    assert code == 0, err
    assert temp_files(run) == []  # debris of the fault is gone
    assert_same_training(checkpoint(run), straight)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == list(range(1, EPOCHS + 1))


# ---------------------------------------------------------------------- kill -9
def kill_during_a_checkpoint_write(tmp_path, capsys, straight, seed):
    """Kill the trainer at a random moment of a checkpoint write — epoch 2 or 3, after a
    random fraction of its bytes (the fault driver holds the write there); the previous
    checkpoint must load, and the resumed run equal the straight one."""
    rng = random.Random(seed)
    epoch, fraction = rng.randint(2, EPOCHS - 1), rng.choice([0.0, 1.0, rng.random()])
    run, marker = tmp_path / f"run{seed}", tmp_path / f"writing{seed}"
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *TINY,
                          env={"FAULT_STALL_WRITE": f"{epoch}:{fraction}", "FAULT_MARKER": str(marker)})
    wait_for(marker.exists, proc)
    proc.kill()
    proc.communicate()
    assert temp_files(run), "the kill did not land inside the write"
    payload = load_checkpoint(str(run / "checkpoint.pt"))  # the previous one, whole
    assert payload["trainer"]["epoch"] == epoch - 1
    resume_equals_straight(capsys, str(run), straight)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_during_a_checkpoint_write_leaves_the_last_checkpoint(tmp_path, capsys, straight, seed):
    kill_during_a_checkpoint_write(tmp_path, capsys, straight, seed)


@pytest.mark.slow
def test_kill_9_ten_times_at_random_moments(tmp_path, capsys, straight):
    for seed in range(100, 110):
        kill_during_a_checkpoint_write(tmp_path, capsys, straight, seed)


# ---------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_training_with_one_line_and_an_exact_resume(tmp_path, capsys, straight, sig):
    run = tmp_path / "run"
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *TINY, env={"FAULT_EPOCH_SLEEP": "0.5"})
    wait_for((run / "checkpoint.pt").exists, proc)
    time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + sig
    line = one_line(err)
    assert f"interrupted by {sig.name}" in line
    assert str(run / "checkpoint.pt") in line and f"pyro-vae train --resume --out {run}" in line
    assert 1 <= checkpoint(run)["trainer"]["epoch"] < EPOCHS
    assert temp_files(run) == []
    resume_equals_straight(capsys, str(run), straight)


@pytest.mark.parametrize("sig, delay", [(signal.SIGINT, 0.8), (signal.SIGTERM, 0.8), (signal.SIGTERM, 0.3),
                                        (signal.SIGINT, 2.0)])
def test_a_signal_during_start_up_ends_without_a_traceback(tmp_path, sig, delay):
    """While torch and Pyro are imported and the data loaded: one line, no traceback, and no
    abort of a compiled extension's initialisation (a signal is held until an import ends)."""
    run = tmp_path / "run"
    proc = subprocess_cli("train", "--epochs", 1, "--out", run, *TINY)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode != 0 and "Traceback" not in err and "terminate called" not in err, err
    assert len(err.strip().splitlines()) <= 1, err
    if run.exists() and not (run / "checkpoint.pt").exists():  # a fresh train may start there
        check_new_run(str(run))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_ends_is_too_late_to_stop_it(tmp_path, capsys, monkeypatch, sig):
    """torchrun's agent ends rank 0 of a run whose peer died just as rank 0 returned: the
    signal landed while the handlers were put back, and escaped the command line as a
    traceback (CI, once). Now the command's own exit status stands and nothing is raised."""
    put_back = signal.signal
    sent = []

    def signal_then_put_back(signum, handler):
        if not sent and handler not in (signals._handle, signals._look_again):  # restore(), not install()
            sent.append(signum)
            os.kill(os.getpid(), sig)
        return put_back(signum, handler)

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))  # SIG_IGN in a background job
    monkeypatch.setattr("inference.signals.signal.signal", signal_then_put_back)
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "missing")
    monkeypatch.undo()
    assert sent and code == 2
    assert one_line(err).startswith("pyro-vae evaluate: error:")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # put back


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("stop", [KeyboardInterrupt, signals.Terminated])
def test_a_signal_while_the_arguments_are_read_is_one_line(tmp_path, capsys, monkeypatch, command, stop):
    """The window the start-up test above hits by timing (a SIGTERM 0.3 s in, on a loaded
    machine, once gave a traceback: there were no options yet to say where things stood)."""
    def interrupted(*args, **kwargs):
        raise stop()

    monkeypatch.setattr("inference.cli.options", interrupted)
    argv = ["train", "--epochs", 1, "--out", tmp_path / "run", *TINY] if command == "train" else ["evaluate",
                                                                                                  tmp_path / "run"]
    code, _, err = run_cli(capsys, *argv)
    name = "SIGINT" if stop is KeyboardInterrupt else "SIGTERM"
    assert code == signals.EXIT_STATUS[name]
    assert one_line(err) == f"pyro-vae {command}: interrupted by {name}; nothing was written"
    assert not (tmp_path / "run").exists()


def test_ctrl_c_before_the_first_checkpoint_leaves_a_run_that_resumes(tmp_path, capsys, monkeypatch, straight):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    run = str(tmp_path / "run")
    code, _, err = run_cli(capsys, "train", "--epochs", EPOCHS, "--out", run, *TINY)
    assert code == 130
    line = one_line(err)
    assert "interrupted by SIGINT" in line and f"holds no checkpoint yet; start it again with: " \
                                               f"pyro-vae train --resume --out {run}" in line
    assert sorted(set(os.listdir(run)) - {"tb"}) == ["config.json"]  # tb/: the events of no epoch
    monkeypatch.undo()
    resume_equals_straight(capsys, run, straight)


# ---------------------------------------------------------------------- selection and averaging
def resume_equals_straight_selected(capsys, run, straight_selected):
    """Continue a SELECTED run to EPOCHS epochs: its checkpoint.pt (trained and averaged
    weights, best epoch, skipped updates) and best.pt equal the straight run's bit for bit."""
    code, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--epochs", EPOCHS)
    assert code == 0, err
    assert temp_files(run) == []
    ckpt, best, _ = straight_selected
    assert_same_training(checkpoint(run), ckpt)
    again = checkpoint(run, "best.pt")
    assert again["best"] == best["best"]
    assert all(torch.equal(again["model_state"][k], v) for k, v in best["model_state"].items())


def test_a_signal_in_a_run_with_averaging_early_stopping_and_skips_resumes_exactly(tmp_path, capsys,
                                                                                   straight_selected):
    _, _, metrics = straight_selected
    assert any(m["skipped"] for m in metrics) and not all(m["skipped"] == m["steps"] for m in metrics)
    run = tmp_path / "run"
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *SELECTED, env={"FAULT_EPOCH_SLEEP": "0.5"})
    wait_for((run / "checkpoint.pt").exists, proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143 and "interrupted by SIGTERM" in one_line(err)
    assert 1 <= checkpoint(run)["trainer"]["epoch"] < EPOCHS
    resume_equals_straight_selected(capsys, str(run), straight_selected)


def test_kill_9_between_the_two_checkpoint_files_never_leaves_them_disagreeing(tmp_path, capsys,
                                                                                straight_selected):
    """Killed after checkpoint.pt of epoch 2 and before best.pt of epoch 2: checkpoint.pt says
    epoch 2 is the best, best.pt still holds epoch 1. Every reader takes the best weights
    from checkpoint.pt then (they are its evaluated weights), `evaluate` says epoch 2, and the
    resumed run writes best.pt again and equals the straight one."""
    _, _, metrics = straight_selected
    assert metrics[1]["best_epoch"] == 2  # epoch 2 improves on the validation split
    run, marker = tmp_path / "run", tmp_path / "writing"
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *SELECTED,
                          env={"FAULT_STALL_BEST": "2", "FAULT_MARKER": str(marker)})
    wait_for(marker.exists, proc)
    proc.kill()
    proc.communicate()
    assert checkpoint(run)["trainer"]["epoch"] == 2 and checkpoint(run)["trainer"]["stopping"]["best_epoch"] == 2
    assert checkpoint(run, "best.pt")["best"]["epoch"] == 1  # one write behind
    results = {}
    for which in ("best", "last"):
        code, _, err = run_cli(capsys, "evaluate", run, "--checkpoint", which, "--iwae-samples", "3",
                               "--no-progress")
        assert code == 0, err
        results[which] = json.load(open(run / "eval.json"))
    assert results["best"]["checkpoint"] == "best" and results["best"]["checkpoint_epoch"] == 2
    assert results["best"]["nll"] == results["last"]["nll"]  # the same weights: epoch 2's, averaged
    resume_equals_straight_selected(capsys, str(run), straight_selected)


# ---------------------------------------------------------------------- NaN
def nan_from(monkeypatch, epoch):
    """The loss of every step of ``epoch`` (1-based) is NaN."""
    step = Trainer.step

    def nan_step(self, x, kl_scale=1.0, global_batch=None):
        if self.epoch + 1 == epoch:
            return torch.tensor(float("nan"))
        return step(self, x, kl_scale, global_batch)

    monkeypatch.setattr(Trainer, "step", nan_step)


def test_a_nan_loss_stops_with_the_last_checkpoint_intact(tmp_path, capsys, straight):
    run = tmp_path / "run"  # in a subprocess: its real stderr holds the one line, no warning
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *TINY, env={"FAULT_NAN_EPOCH": "3"})
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1
    line = one_line(err)
    for fragment in ("the loss became nan at epoch 3", "the last checkpoint (epoch 2)",
                     "start a new run with a smaller --lr"):
        assert fragment in line, line
    assert "--resume" not in line  # a resume repeats the same steps and refuses --lr anyway
    assert checkpoint(run)["trainer"]["epoch"] == 2
    resume_equals_straight(capsys, str(run), straight)  # the checkpoint before the NaN is exact


@pytest.mark.parametrize("how", ["train", "resume"])
def test_a_nan_before_the_first_checkpoint_leaves_a_run_that_starts_again(tmp_path, capsys, monkeypatch,
                                                                           straight, how):
    nan_from(monkeypatch, 1)
    run = str(tmp_path / "run")
    refused(capsys, ["train", "--epochs", EPOCHS, "--out", run, *TINY], "holds no checkpoint",
            f"pyro-vae train --out {run} --lr", code=1)
    assert sorted(set(os.listdir(run)) - {"tb"}) == ["config.json"]
    monkeypatch.undo()
    argv = ["--resume", "--out", run] if how == "resume" else ["--epochs", EPOCHS, "--out", run, *TINY]
    code, _, err = run_cli(capsys, "train", *argv)
    assert code == 0, err
    assert_same_training(checkpoint(run), straight)


# ---------------------------------------------------------------------- memory
def test_an_allocation_that_fails_is_one_line(tmp_path, capsys, monkeypatch):
    train_epoch = Trainer.train_epoch

    def greedy(self):
        if self.epoch == 1:  # torch's words for it on a CPU
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 1024000000000 bytes. Error code 12")
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", greedy)
    run = str(tmp_path / "run")
    refused(capsys, ["train", "--epochs", EPOCHS, "--out", run, *TINY], "out of memory (an allocation of 953.7 GiB "
            "failed)", "--batch-size", "the last checkpoint (epoch 1)", f"pyro-vae train --resume --out {run}",
            code=1)


# ---------------------------------------------------------------------- full disk
def test_a_file_size_limit_before_the_first_checkpoint(tmp_path, capsys, straight):
    """RLIMIT_FSIZE: config.json fits, the checkpoint does not (EFBIG, as a full disk's ENOSPC)."""
    run = tmp_path / "run"
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *TINY, "--no-tensorboard",
                          env={"FAULT_FSIZE": "20000"})
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2
    line = one_line(err)
    assert f"cannot write {run / 'checkpoint.pt'}: the file is too large" in line
    assert f"start it again with: pyro-vae train --resume --out {run}" in line
    assert temp_files(run) == [] and not (run / "checkpoint.pt").exists()
    resume_equals_straight(capsys, str(run), straight)


def test_a_full_disk_under_tensorboard_events_is_one_line(tmp_path, capsys, straight):
    """The event file (image grids) reaches the limit first: TensorBoard's writer thread
    fails, and the training thread says so in one line — no thread traceback."""
    run = tmp_path / "run"
    proc = subprocess_cli("train", "--epochs", EPOCHS, "--out", run, *TINY, env={"FAULT_FSIZE": "20000"})
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2
    line = one_line(err)
    assert f"cannot write {run / 'tb'}: the file is too large" in line and "Thread" not in err
    assert f"start it again with: pyro-vae train --resume --out {run}" in line
    resume_equals_straight(capsys, str(run), straight)


def test_a_full_disk_during_training_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch, straight):
    from inference import checkpoint as checkpoints
    from inference.io import atomic_write

    def save(obj, path):
        buf = io.BytesIO()
        torch.save(obj, buf)

        def write(f):
            if obj.get("trainer", {}).get("epoch") == 2:  # half the bytes, then the disk is full
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            f.write(buf.getvalue())

        atomic_write(path, write)

    monkeypatch.setattr(checkpoints, "atomic_save", save)
    run = str(tmp_path / "run")
    refused(capsys, ["train", "--epochs", EPOCHS, "--out", run, *TINY],
            f"cannot write {os.path.join(run, 'checkpoint.pt')}: no space left on the device",
            "the last checkpoint (epoch 1)", f"continue with: pyro-vae train --resume --out {run}")
    assert temp_files(run) == [] and checkpoint(run)["trainer"]["epoch"] == 1
    monkeypatch.undo()
    resume_equals_straight(capsys, run, straight)


# ---------------------------------------------------------------------- debris and modes
def test_stale_temp_files_are_removed_by_the_next_command(run_copy, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that is gone
    stale = [f"checkpoint.pt.{dead.pid}.k2j4h5g6.tmp", "checkpoint.pt.abcd_123.tmp"]  # pyro-vae ≤ 0.2's name
    live = f"eval.json.{os.getpid()}.q1w2e3r4.tmp"  # a writer that is still running
    for name in stale + [live]:
        with open(os.path.join(run_copy, name), "wb") as f:
            f.write(b"x" * 1000)
    old = time.time() - 3600
    os.utime(os.path.join(run_copy, stale[1]), (old, old))
    code, _, err = run_cli(capsys, "sample", run_copy, "--n", 4, "--out", os.path.join(run_copy, "..", "s.png"))
    assert code == 0, err
    assert temp_files(run_copy) == [live]


def test_files_are_written_with_the_users_umask(tmp_path):
    from inference.io import atomic_write_text

    for mask in (0o022, 0o002, 0o077):
        previous = os.umask(mask)
        try:
            path = tmp_path / f"f{mask:o}.json"
            atomic_write_text(str(path), "{}")
        finally:
            os.umask(previous)
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_a_run_is_readable_by_others_under_a_umask_of_022(trained_run):
    for name in os.listdir(trained_run):
        mode = os.stat(os.path.join(trained_run, name)).st_mode & 0o777
        assert mode & 0o044 == 0o044, (name, oct(mode))  # group and others may read


@pytest.mark.slow
def test_sigterm_stops_a_data_parallel_run_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    env = {"PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    proc = subprocess.Popen([sys.executable, "-m", "inference.cli", "train", "--nproc", "2", "--epochs", "500",
                             "--out", str(run), *TINY], cwd=tmp_path, env={**os.environ, **env,
                                                                          "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for((run / "checkpoint.pt").exists, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143
    line = one_line(err)
    assert "interrupted by SIGTERM" in line and f"pyro-vae train --resume --out {run}" in line
    assert checkpoint(run)["trainer"]["epoch"] >= 1
    assert temp_files(run) == []
