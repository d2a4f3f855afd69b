"""The ``pyro-vae`` command line with a fault injected, for the fault tests.

``python tests/reliability/driver.py ARGS…`` runs ``inference.cli.main(ARGS)`` after
applying the faults named in the environment:

* ``FAULT_EPOCH_SLEEP=S`` — every epoch takes S seconds longer (so that a signal can be
  sent while a run is training, whatever the load of the machine);
* ``FAULT_STALL_WRITE=E:F`` — the checkpoint write of epoch E stops after a fraction F of
  its bytes (0 ≤ F ≤ 1; at 1 every byte is written but the file is neither synced nor
  renamed), creates ``FAULT_MARKER`` (a path) and waits: a test that waits for the marker
  can ``kill -9`` the process at that moment of the write, whatever the machine's load;
* ``FAULT_STALL_BEST=E`` — the write of ``best.pt`` for epoch E waits before its first byte
  (after ``checkpoint.pt`` of that epoch is written), creates ``FAULT_MARKER`` and waits: a
  ``kill -9`` there lands between the two checkpoint files;
* ``FAULT_FSIZE=BYTES`` — a file-size limit (``RLIMIT_FSIZE``; SIGXFSZ ignored, so a write
  beyond it fails with EFBIG as a full disk fails with ENOSPC);
* ``FAULT_NOSPACE_EPOCH=E`` — the checkpoint write of epoch E fails with ENOSPC;
* ``FAULT_NAN_EPOCH=E`` — the loss of every step of epoch E is NaN.
"""

import errno
import os
import resource
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def _patch_trainer(sleep: float) -> None:
    from pyro_vae.infer.trainer import Trainer

    train_epoch = Trainer.train_epoch

    def slow_epoch(self):
        metrics = train_epoch(self)
        time.sleep(sleep)
        return metrics

    Trainer.train_epoch = slow_epoch


def _patch_nan(nan_epoch: int) -> None:
    import torch

    from pyro_vae.infer.trainer import Trainer

    step = Trainer.step

    def nan_step(self, x, kl_scale=1.0, global_batch=None):
        if self.epoch + 1 == nan_epoch:
            return torch.tensor(float("nan"))
        return step(self, x, kl_scale, global_batch)

    Trainer.step = nan_step


def _patch_checkpoint(stall: str, nospace: int, marker: str, stall_best: int = 0) -> None:
    import io

    import torch

    from inference import checkpoint
    from inference.io import atomic_write

    def save(obj, path):
        epoch = int(obj.get("trainer", {}).get("epoch", 0))
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()

        def write(f):
            if stall_best and obj.get("best", {}).get("epoch") == stall_best:
                open(marker, "w").close()
                time.sleep(3600)  # until the test kills this process
            if nospace and epoch == nospace:
                f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if stall and epoch == int(stall.split(":")[0]):
                f.write(data[: int(len(data) * float(stall.split(":")[1]))])
                f.flush()
                open(marker, "w").close()
                time.sleep(3600)  # until the test kills this process
            f.write(data)

        atomic_write(path, write)

    checkpoint.atomic_save = save


def main() -> int:
    env = os.environ
    if env.get("FAULT_FSIZE"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = int(env["FAULT_FSIZE"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if env.get("FAULT_EPOCH_SLEEP"):
        _patch_trainer(float(env["FAULT_EPOCH_SLEEP"]))
    if env.get("FAULT_STALL_WRITE") or env.get("FAULT_NOSPACE_EPOCH") or env.get("FAULT_STALL_BEST"):
        _patch_checkpoint(env.get("FAULT_STALL_WRITE", ""), int(env.get("FAULT_NOSPACE_EPOCH", "0")),
                          env.get("FAULT_MARKER", ""), int(env.get("FAULT_STALL_BEST", "0")))
    if env.get("FAULT_NAN_EPOCH"):
        _patch_nan(int(env["FAULT_NAN_EPOCH"]))
    from inference.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
