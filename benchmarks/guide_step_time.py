"""Milliseconds per SVI step of the default dense VAE with each guide (batch 128).

Every guide is timed on the same random binary batch, with ``Trace_ELBO``, the training
loop's optimizer and validation off, after warm-up steps. Guide options are given as
``name`` or ``name:JSON``. Run::

    python benchmarks/guide_step_time.py --threads 1 gaussian planar iaf realnvp spline \\
        sylvester 'sylvester:{"num_ortho": 32}' 'sylvester:{"variant": "householder"}' \\
        'sylvester:{"variant": "triangular"}'
"""

from __future__ import annotations

import argparse
import json
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae.infer.optim import FusedClippedAdam
from pyro_vae import build_guide, build_vae

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("guides", nargs="+")
parser.add_argument("--flows", type=int, default=4)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--threads", type=int, default=None)
args = parser.parse_args()
if args.threads is not None:
    torch.set_num_threads(args.threads)

torch.manual_seed(0)
x = torch.bernoulli(torch.full((128, 1, 28, 28), 0.2))
for item in args.guides:
    name, _, opts = item.partition(":")
    options = json.loads(opts) if opts else {}
    if name != "gaussian":
        options.setdefault("num_flows", args.flows)
    pyro.clear_param_store()
    vae = build_vae("dense", (1, 28, 28), z_dim=32)
    guide = build_guide(name, vae, **options)
    params = list(vae.parameters()) + list(guide.parameters())
    svi = SVI(vae.model, guide, FusedClippedAdam({"lr": 1e-3}, params=params), Trace_ELBO(max_plate_nesting=1))
    with pyro.validation_enabled(False):
        for _ in range(3):
            svi.step(x, num_data=4000)
        start = time.perf_counter()
        for _ in range(args.steps):
            svi.step(x, num_data=4000)
    ms = (time.perf_counter() - start) / args.steps * 1000
    print(f"{item:45s} {ms:7.1f} ms/step  {sum(p.numel() for p in guide.parameters()):>10,} guide params")
