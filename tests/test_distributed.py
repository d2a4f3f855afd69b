"""Data parallelism on torch.distributed (gloo, 2 CPU processes): the averaged gradient is the
single-process gradient of the same global batch, the command line runs under torchrun and
`--nproc` with one run directory, and a rank that dies ends the run cleanly."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from pyro_vae.guides.base import JointGuide

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--train-size", "96", "--test-size", "24", "--z-dim", "2", "--iwae-samples", "4",
        "--batch-size", "32", "--no-progress"]
DENSE = ["--set", "hidden_dims=[16]"]


class DeltaGuide(JointGuide):
    """q(z | x) = δ(μ_φ(x)) (δ(μ_φ(x, y)) given labels): no noise, so one process and two see the
    very same draws."""

    def _distribution(self, x, y=None):
        import pyro.distributions as dist

        return dist.Delta(self.vae.encoder.loc_scale(self.vae.encoder.features(x, y))[0], event_dim=1)


def _join(rank, world, port):
    """One thread, float64, this rank in the process group (if several), seed 0."""
    import pyro

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    pyro.set_rng_seed(0)


def _train_steps(rank, world, batches, port, out, compression="none"):
    """K engine steps on `batches` (each a global batch) in a world of `world` processes."""
    import pyro

    from pyro_vae import build_vae, load_dataset
    from pyro_vae.infer.config import TrainConfig
    from pyro_vae.infer.trainer import Trainer

    _join(rank, world, port)
    data = load_dataset("mnist5k", binarize="none", train_size=64, test_size=8)
    vae = build_vae("dense", data.x_shape, z_dim=3, likelihood="gaussian", hidden_dims=(8,)).double()
    guide = DeltaGuide(vae)
    trainer = Trainer(vae, guide, data, TrainConfig(lr=1e-2, ema=0.5, weight_decay=0.1, grad_compression=compression))
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for x in batches:
            x = x.double()
            shard = torch.tensor_split(x, world)[rank] if world > 1 else x
            trainer.step(shard, global_batch=len(x))
    if rank == 0:
        torch.save({k: v.clone() for k, v in vae.state_dict().items()}, out)
    # the moving average of the weights: every rank keeps its own
    torch.save({k: v.clone() for k, v in trainer.average.model.state_dict().items()}, f"{out}.average{rank}")
    if world > 1:
        torch.distributed.destroy_process_group()


def test_two_processes_take_the_single_process_steps_on_the_same_global_batches(tmp_path):
    gen = torch.Generator().manual_seed(1)
    # global batches of 8 and of 7 (shards of 4 + 3: the R·b_r/B scaling must hold exactly)
    batches = [torch.rand(n, 1, 28, 28, generator=gen) for n in (8, 7, 8, 8, 7)]
    _train_steps(0, 1, batches, 0, tmp_path / "one.pt")
    port = 29500 + os.getpid() % 1000
    mp.spawn(_train_steps, args=(2, batches, port, tmp_path / "two.pt"), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name in one:
        # float64; the two processes sum their halves of the gradient in another order
        torch.testing.assert_close(two[name], one[name], rtol=1e-10, atol=1e-12, msg=name)
    # the moving average of two processes is the one process's (issue 21), and not the weights
    one_avg = torch.load(tmp_path / "one.pt.average0")
    two_avg = [torch.load(tmp_path / f"two.pt.average{rank}") for rank in (0, 1)]
    for name in one_avg:
        torch.testing.assert_close(two_avg[0][name], one_avg[name], rtol=1e-10, atol=1e-12, msg=name)
        assert torch.equal(two_avg[1][name], two_avg[0][name])  # identical on every rank
    assert any(not torch.allclose(one_avg[k], one[k]) for k in one)
    first = _initial_parameters()
    moved = any(not torch.allclose(first[k], one[k]) for k in one)
    assert moved  # the steps did change the parameters


@pytest.mark.parametrize("compression, digits", [("fp16", 11), ("bf16", 8)])
def test_compressed_gradients_take_the_same_steps_to_their_precision(tmp_path, compression, digits):
    """--grad-compression: the all-reduced gradient is rounded to 16 bits (fp16: 11
    significant bits, bf16: 8), so after five Adam steps of lr 1e-2 each parameter is within a
    few rounding steps of the uncompressed run's — and not equal to it (the hook did run)."""
    gen = torch.Generator().manual_seed(1)
    batches = [torch.rand(n, 1, 28, 28, generator=gen) for n in (8, 7, 8, 8, 7)]
    _train_steps(0, 1, batches, 0, tmp_path / "one.pt")
    port = 29500 + (os.getpid() + 13) % 1000
    mp.spawn(_train_steps, args=(2, batches, port, tmp_path / "two.pt", compression), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    # Adam's step is lr · m/√v: a relative gradient error ε moves it by at most ~lr·ε per step
    bound = 5 * 1e-2 * 2.0 ** (1 - digits) * 4
    assert max(float((one[k] - two[k]).abs().max()) for k in one) <= bound
    assert any(not torch.equal(one[k], two[k]) for k in one)


def _ssvae_steps(rank, world, batches, port, out):
    """K engine steps of the semi-supervised VAE, each on an unlabelled global batch (its label
    enumerated) and a labelled one, in a world of `world` processes; float64."""
    import pyro

    from pyro_vae import build_vae, load_dataset
    from pyro_vae.infer.config import TrainConfig
    from pyro_vae.infer.trainer import Trainer
    from pyro_vae.labels import keep_labels
    from pyro_vae.models.ssvae import SemiSupervisedGuide

    _join(rank, world, port)
    data = load_dataset("mnist5k", binarize="none", train_size=64, test_size=8)
    keep_labels(data, 2)
    vae = build_vae("ssvae", data.x_shape, z_dim=3, likelihood="gaussian", num_classes=10, hidden_dims=(8,))
    guide = SemiSupervisedGuide(vae.double(), DeltaGuide(vae))
    trainer = Trainer(vae, guide, data, TrainConfig(lr=1e-2))
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with pyro.settings.context(module_local_params=True), pyro.validation_enabled(False):
        for xu, xl, yl in batches:
            parts = [(xu, None, 44, 1.0), (xl, yl, 20, 1.0)]
            if world > 1:  # this rank's shards, weighted R · b_r / B as labelled_steps weights them
                parts = [(torch.tensor_split(x, world)[rank], None if y is None else torch.tensor_split(y, world)[rank],
                          n, world * len(torch.tensor_split(x, world)[rank]) / len(x)) for x, y, n, _ in parts]
            trainer.labelled_step(parts)
    if rank == 0:
        torch.save({"before": before, "after": {k: v.clone() for k, v in vae.state_dict().items()}}, out)
    if world > 1:
        torch.distributed.destroy_process_group()


def test_two_processes_take_the_single_process_steps_of_the_semi_supervised_vae(tmp_path):
    """The label enumerated by TraceEnum_ELBO on each rank's shard, the labelled shard and the
    classification term: the averaged gradient is the single-process one (float64)."""
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.rand(nu, 1, 28, 28, generator=gen, dtype=torch.float64),
                torch.rand(nl, 1, 28, 28, generator=gen, dtype=torch.float64),
                torch.randint(0, 10, (nl,), generator=gen)) for nu, nl in ((8, 6), (7, 5), (8, 6))]
    _ssvae_steps(0, 1, batches, 0, tmp_path / "one.pt")
    port = 29500 + (os.getpid() + 13) % 1000
    mp.spawn(_ssvae_steps, args=(2, batches, port, tmp_path / "two.pt"), nprocs=2, join=True)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name in one["after"]:
        torch.testing.assert_close(two["after"][name], one["after"][name], rtol=1e-10, atol=1e-12, msg=name)
    # every network moved, the classifier among them (the enumerated label's q(y|x) and its α term)
    for prefix in ("classifier_head", "encoder.head", "decoder"):
        assert any(not torch.equal(one["before"][k], one["after"][k]) for k in one["after"] if k.startswith(prefix))


def _actnorm_init(rank, world, x, port, out):
    from pyro_vae.flows.transforms import ActNorm

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    t = ActNorm(3).double()
    t(torch.tensor_split(x, world)[rank])  # the first training call initialises
    torch.save({k: v.clone() for k, v in t.state_dict().items()}, f"{out}.{rank}")
    if world > 1:
        torch.distributed.destroy_process_group()


def test_actnorm_starts_every_rank_from_the_global_batch_statistics(tmp_path):
    """A Glow/RealNVP run under DDP: each rank sees its shard (5 and 4 images here), but the
    data-dependent initialisation must be the single process's on the whole batch — or the
    ranks would train different models from the first step."""
    x = torch.randn(9, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    _actnorm_init(0, 1, x, 0, tmp_path / "one")
    port = 29500 + (os.getpid() + 7) % 1000
    mp.spawn(_actnorm_init, args=(2, x, port, tmp_path / "two"), nprocs=2, join=True)
    one = torch.load(f"{tmp_path / 'one'}.0")
    for rank in (0, 1):
        two = torch.load(f"{tmp_path / 'two'}.{rank}")
        for name in ("bias", "log_scale"):  # float64: one-pass vs two-pass moments
            torch.testing.assert_close(two[name], one[name], rtol=1e-10, atol=1e-12, msg=name)


def _initial_parameters():
    import pyro

    from pyro_vae import build_vae

    torch.set_default_dtype(torch.float64)
    try:
        pyro.set_rng_seed(0)
        return build_vae("dense", (1, 28, 28), z_dim=3, likelihood="gaussian", hidden_dims=(8,)).state_dict()
    finally:
        torch.set_default_dtype(torch.float32)


def _cli(cwd, *argv, launcher=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "inference.cli", *argv]
    if launcher:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={launcher}",
               "-m", "inference.cli", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_command_line_under_torchrun_writes_one_run_directory_that_resumes(tmp_path):
    proc = _cli(tmp_path, "train", "--model", "conv", "--set", "channels=[4,8]", "--set", "hidden=16",
                "--epochs", "1", *TINY, launcher=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = glob.glob(str(tmp_path / "runs" / "*"))
    assert len(runs) == 1, runs  # rank 0 named it, and alone wrote it
    run = runs[0]
    assert proc.stdout.count("test ELBO") == 1  # rank 0 alone printed
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["model"]["name"] == "conv"
    ckpt = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    assert ckpt["trainer"]["world_size"] == 2 and len(ckpt["trainer"]["rank_rng"]) == 2
    # resume with two processes, then with one (another world size), through --nproc
    proc = _cli(tmp_path, "train", "--resume", "--out", run, "--epochs", "2", "--nproc", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _cli(tmp_path, "train", "--resume", "--out", run, "--epochs", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert _cli(tmp_path, "evaluate", run, "--iwae-samples", "4", "--no-progress").returncode == 0
    assert _cli(tmp_path, "sample", run, "--n", "4").returncode == 0
    assert len(glob.glob(str(tmp_path / "runs" / "*"))) == 1


def test_two_processes_resume_exactly_as_a_straight_run(tmp_path):
    common = ["--epochs", "2", *TINY, *DENSE]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    for out, epochs in ((straight, "2"), (split, "1")):
        proc = _cli(tmp_path, "train", "--out", out, "--epochs", epochs, *common[2:], "--nproc", "2")
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _cli(tmp_path, "train", "--resume", "--out", split, "--epochs", "2", "--nproc", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = torch.load(os.path.join(straight, "checkpoint.pt"), weights_only=True)["model_state"]
    b = torch.load(os.path.join(split, "checkpoint.pt"), weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _worker_pids(parent):
    """pid → RANK of the worker processes started under `parent` (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        env = dict(e.split(b"=", 1) for e in environ if b"=" in e)
        if b"inference.cli" in cmdline and env.get(b"TEST_PARENT") == str(parent).encode() and b"RANK" in env:
            out[int(entry)] = int(env[b"RANK"])
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_a_rank_that_dies_ends_the_run_in_one_line_with_the_checkpoint_intact(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "TEST_PARENT": str(os.getpid())}
    proc = subprocess.Popen([sys.executable, "-m", "inference.cli", "train", "--nproc", "2", "--epochs", "500",
                             "--out", str(run), *TINY, *DENSE], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (run / "checkpoint.pt").exists()
    victims = [pid for pid, rank in _worker_pids(os.getpid()).items() if rank == 1]
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "process 1 of 2 was killed by SIGKILL" in lines[0] and "--resume" in lines[0]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["trainer"]["epoch"] >= 1


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_agents_on_one_host_train_one_run_as_two_machines_would(tmp_path):
    """Two torchrun agents, one process each, meeting through c10d's rendezvous at a free
    port of this host — the multi-node launch of the README, as PyTorch's own launcher tests
    run it: one run directory, one metrics line per epoch, the same parameters on both ranks;
    then the run resumes in one process."""
    run, dump, port = tmp_path / "run", tmp_path / "dump", _free_port()
    dump.mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "RANK_DUMP": str(dump)}
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-agents",
         os.path.join(ROOT, "tests", "agent_worker.py"),
         "train", "--epochs", "2", "--out", str(run), *TINY, *DENSE],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [agent.communicate(timeout=600) for agent in agents]
    for agent, (out, err) in zip(agents, outputs):
        assert agent.returncode == 0, err[-3000:]
    assert sum(out.count("test ELBO") for out, _ in outputs) == 1  # rank 0 alone reported
    assert sorted(os.listdir(tmp_path)) == ["dump", "run"]  # one run directory, nothing else
    metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [m["epoch"] for m in metrics] == [1, 2]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["trainer"]["world_size"] == 2
    ranks = [torch.load(dump / f"rank{r}.pt") for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.equal(ranks[0][key], ckpt["model_state"][key]), key
    proc = _cli(tmp_path, "train", "--resume", "--out", str(run), "--epochs", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [json.loads(line)["epoch"] for line in open(run / "metrics.jsonl")] == [1, 2, 3]
