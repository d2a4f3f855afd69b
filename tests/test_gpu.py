"""On a GPU: training, evaluation, sampling and the posterior on ``cuda``, bf16, and NCCL.

Every test is marked ``gpu`` and skipped where CUDA is not available (CI has none);
``benchmarks/gpu_check.sh`` runs them on a GPU machine.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from inference.cli import main

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--train-size", "256", "--test-size", "64", "--z-dim", "4", "--iwae-samples", "8",
         "--no-progress", "--device", "cuda"]


@pytest.mark.parametrize("model", ["dense", "conv", "resnet"])
def test_train_evaluate_sample_posterior_on_cuda(tmp_path, model):
    run = str(tmp_path / model)
    assert main(["train", "--model", model, "--epochs", "2", "--out", run, *QUICK]) == 0
    assert main(["evaluate", run, "--iwae-samples", "8", "--device", "cuda", "--no-progress"]) == 0
    assert main(["sample", run, "--n", "4", "--device", "cuda"]) == 0
    assert main(["posterior", run, "--index", "0", "--chains", "2", "--draws", "20", "--warmup", "20",
                 "--iwae-samples", "16", "--local-steps", "50", "--device", "cuda", "--no-progress"]) == 0


def test_the_same_run_on_cpu_and_cuda_agrees(tmp_path):
    """Same seed, same data order (the data generator moves with the data): the losses of the
    first epoch agree to float32 rounding across devices only statistically — the noise comes
    from another RNG — so compare the evaluation of one model on both devices instead."""
    run = str(tmp_path / "r")
    assert main(["train", "--epochs", "1", "--out", run, *QUICK]) == 0
    assert main(["evaluate", run, "--iwae-samples", "64", "--no-progress"]) == 0
    cpu = json.load(open(os.path.join(run, "eval.json")))
    assert main(["evaluate", run, "--iwae-samples", "64", "--no-progress", "--device", "cuda"]) == 0
    gpu = json.load(open(os.path.join(run, "eval.json")))
    assert abs(cpu["nll"] - gpu["nll"]) < 4 * cpu["nll_sem"] / 8 ** 0.5 + 1.0


def test_bf16_trains_close_to_float32(tmp_path):
    results = {}
    for precision in ("float32", "bf16"):
        run = str(tmp_path / precision)
        assert main(["train", "--epochs", "2", "--precision", precision, "--out", run, *QUICK]) == 0
        results[precision] = json.load(open(os.path.join(run, "eval.json")))
    assert abs(results["bf16"]["elbo"] - results["float32"]["elbo"]) < 5.0


def test_ddp_on_every_visible_gpu(tmp_path):
    n = torch.cuda.device_count()
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={n}", "-m", "inference.cli", "train", "--model", "conv",
                           "--epochs", "1", "--out", str(tmp_path / "ddp"), *QUICK],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert ckpt["trainer"]["world_size"] == n


@pytest.mark.parametrize("model", ["dense", "conv"])
def test_the_compiled_step_with_cuda_graphs_trains_like_eager(tmp_path, model):
    """On a GPU the compiled step replays CUDA graphs (torch.compile's reduce-overhead mode);
    its noise comes from inductor's generator, so the runs agree in distribution, not bit
    for bit: the same ELBO to within a few nats after two epochs, and the step compiled."""
    results = {}
    for name, flags in (("eager", ["--no-capture"]), ("captured", []), ("compiled", ["--compile"])):
        run = str(tmp_path / name)
        assert main(["train", "--model", model, "--epochs", "2", "--out", run, *QUICK, *flags]) == 0
        results[name] = json.load(open(os.path.join(run, "eval.json")))
    assert abs(results["compiled"]["elbo"] - results["eager"]["elbo"]) < 5.0
    # the captured step replays the eager kernels in their order: the same run (cuDNN's
    # algorithm choice may differ between calls, hence a tolerance rather than equality)
    assert results["captured"]["elbo"] == pytest.approx(results["eager"]["elbo"], abs=1e-2)
