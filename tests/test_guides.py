"""The guide contract, parametrised over the GUIDES registry (and the Sylvester variants).

A guide registered in ``pyro_vae.guides`` is tested here the moment it is registered:
the contract itself (built by name for a VAE of one latent site and for the hierarchical
VAE, every public method honoured, the input checked once per call, options read from real
signatures), log q(z | x) against an autograd Jacobian in float64, broadcasting over
particle and batch dimensions, gradients, rsample, identity initialisation, vectorized
``Trace_ELBO`` and IWAE evaluation, and save/load (in memory and through a run directory and
the CLI).
"""

import inspect
import json
import os

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample
from torch.autograd.functional import jacobian

from inference.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from inference.cli import main
from pyro_vae.infer.evaluate import evaluate, log_weights
from inference.restore import load_run
from pyro_vae import GUIDES, ConfigError, build_guide, build_vae
from pyro_vae.guides.base import Guide, JointGuide
from pyro_vae.guides.flows import STEPS, FlowGuide
from pyro_vae.models.hvae import HierarchicalGuide

Z_DIM = 3  # odd, so coupling splits are uneven; small, so Jacobians are cheap


def guide_options(name):
    # householder: an even number of reflections, so that it starts at the identity
    return {} if name == "gaussian" else {"num_flows": 2}


CASES = [pytest.param(name, guide_options(name), id=name) for name in GUIDES.names()] + [
    pytest.param("sylvester", {"num_flows": 3, "variant": "householder", "num_householder": 2},
                 id="sylvester-householder"),
    pytest.param("sylvester", {"num_flows": 3, "variant": "triangular"}, id="sylvester-triangular"),
    # the default M is z_dim // 2 = 1 (a planar-like step); also a full Q, and an MLP hypernet
    pytest.param("sylvester", {"num_flows": 2, "num_ortho": Z_DIM, "hidden_dims": [8]},
                 id="sylvester-orthogonal-full"),
]
FLOW_CASES = [c for c in CASES if c.values[0] != "gaussian"]


def make(name, options, dtype=torch.float32):
    vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=Z_DIM, hidden=(16,))
    guide = build_guide(name, vae, **options)
    return vae.to(dtype), guide.to(dtype)


def batch(n=4, dtype=torch.float32):
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.3, dtype=dtype))


@torch.no_grad()
def perturb(*modules, scale=0.3):
    """Move every parameter away from its initialisation. At the identity init some
    gradients vanish by design (a zero last layer blocks the layers before it) and every
    log-determinant is 0, which would make the checks below too easy."""
    for module in modules:
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def apply(transforms, z):
    for t in transforms:
        z = t(z)
    return z


@pytest.mark.parametrize("name, options", FLOW_CASES)
def test_log_density_matches_autograd_jacobian_in_float64(name, options):
    vae, guide = make(name, options, torch.float64)
    perturb(vae, guide)
    x = batch(3, torch.float64)
    with torch.no_grad():
        h = vae.encoder.features(x)
        base = vae.encoder.base(h)
        z0 = base.sample()
        transforms = guide.conditioned_flows(h)
        zk = apply(transforms, z0)
        # Pyro scores z_K through the transforms' caches (this is how the ELBO scores it)
        log_q = pyro.distributions.TransformedDistribution(base, transforms).log_prob(zk)
    assert log_q.shape == (3,)
    for b in range(3):
        def flow(v, b=b):  # fresh conditioned transforms: nothing cached from the above
            return apply(guide.conditioned_flows(h[b : b + 1]), v.unsqueeze(0)).squeeze(0)

        jac = jacobian(flow, z0[b])
        assert torch.allclose(flow(z0[b]), zk[b], atol=1e-12)
        expected = base.log_prob(z0)[b] - torch.linalg.slogdet(jac).logabsdet
        # float64 throughout: agreement to ~1e-12 is expected, 1e-8 leaves room for tanh/log1p
        assert abs(float(log_q[b] - expected)) < 1e-8, (float(log_q[b]), float(expected))


@pytest.mark.parametrize("name, options", FLOW_CASES)
def test_flows_broadcast_over_particle_and_batch_dims(name, options):
    vae, guide = make(name, options)
    perturb(vae, guide)
    x = batch(4)
    L = 3
    with torch.no_grad():
        h = vae.encoder.features(x)
        base = vae.encoder.base(h)
        z0 = base.expand((L, 4)).sample()                    # (L, B, D); params are (B, ...)
        transforms = guide.conditioned_flows(h)
        zk = apply(transforms, z0)
        log_q = pyro.distributions.TransformedDistribution(base.expand((L, 4)), transforms).log_prob(zk)
        assert zk.shape == (L, 4, Z_DIM) and log_q.shape == (L, 4)
        for l in range(L):  # each particle alone must give the same values
            transforms_l = guide.conditioned_flows(h)
            zk_l = apply(transforms_l, z0[l])
            log_q_l = pyro.distributions.TransformedDistribution(base, transforms_l).log_prob(zk_l)
            # float32: values of order 1-10, 1e-5 is a few ulps after K steps
            assert torch.allclose(zk_l, zk[l], atol=1e-5)
            assert torch.allclose(log_q_l, log_q[l], atol=1e-4)
    # the same through Pyro: a particle plate at dim -2 around the guide
    with pyro.plate("particles", L, dim=-2):
        trace = poutine.trace(guide).get_trace(x)
    site = trace.nodes["z"]
    assert site["value"].shape == (L, 4, Z_DIM)
    assert site["fn"].log_prob(site["value"]).shape == (L, 4)


@pytest.mark.parametrize("name, options", CASES)
def test_vectorized_trace_elbo_and_iwae_evaluation(name, options):
    vae, guide = make(name, options)
    perturb(guide)
    x = batch(5)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(vae.model, guide, x, num_data=50)
    assert torch.isfinite(torch.tensor(loss))
    lw = log_weights(vae, guide, x, num_samples=7)
    assert lw.log_w.shape == (7, 5) and torch.isfinite(lw.log_w).all()
    result = evaluate(vae, guide, x, num_samples=30, max_rows=40, seed=0)  # several chunks
    assert result["iwae"] >= result["elbo"]  # log-mean-exp ≥ mean, for the same weights
    again = evaluate(vae, guide, x, num_samples=30, max_rows=40, seed=0)
    assert (again["iwae"], again["elbo"]) == (result["iwae"], result["elbo"])  # seeded


@pytest.mark.parametrize("name, options", CASES)
def test_gradient_reaches_every_parameter_and_rsample_has_gradients(name, options):
    vae, guide = make(name, options)
    perturb(vae, guide)
    x = batch(4)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    elbo.differentiable_loss(vae.model, guide, x).backward()
    for pname, p in [*guide.named_parameters(), *vae.encoder.named_parameters(prefix="encoder")]:
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    for p in [*guide.parameters(), *vae.parameters()]:
        p.grad = None
    q = guide.distribution(x)
    assert q.has_rsample and q.batch_shape == (4,) and q.event_shape == (Z_DIM,)
    z = q.rsample()
    assert z.requires_grad
    z.pow(2).sum().backward()
    params = list(guide.parameters()) or list(vae.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("name, options", FLOW_CASES)
def test_flow_guide_at_init_is_the_gaussian_guide(name, options):
    vae, guide = make(name, options)
    x = batch(5)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    torch.manual_seed(3)
    flow_loss = elbo.loss(vae.model, guide, x)
    torch.manual_seed(3)  # the base draws the same noise as the Gaussian guide
    gauss_loss = elbo.loss(vae.model, vae.guide, x)
    torch.manual_seed(4)
    flow_tr = poutine.trace(guide).get_trace(x)
    torch.manual_seed(4)
    gauss_tr = poutine.trace(vae.guide).get_trace(x)
    zf, zg = flow_tr.nodes["z"]["value"], gauss_tr.nodes["z"]["value"]
    lqf = flow_tr.nodes["z"]["fn"].log_prob(zf)
    lqg = gauss_tr.nodes["z"]["fn"].log_prob(zg)
    if name == "spline":
        # Pyro pins the spline's end-knot slopes at 1 - 1e-3, so the best init is 1e-3 off the
        # identity: |Δz| ≲ 1e-3 · bin width, |Δ log q| ≲ K · D · 1e-3 = 6e-3
        assert torch.allclose(zf, zg, atol=2e-3)
        assert torch.allclose(lqf, lqg, atol=1e-2)
        assert abs(flow_loss - gauss_loss) / len(x) < 0.05
    else:
        # float32 round-off only (a Householder pair H H = I, the rest exactly 0 + z)
        assert torch.allclose(zf, zg, atol=1e-6)
        assert torch.allclose(lqf, lqg, atol=1e-5)
        assert abs(flow_loss - gauss_loss) / len(x) < 1e-3  # losses ≈ 550 nats per image
    # the identity is not a stationary point: every step's parameters get a gradient
    elbo.differentiable_loss(vae.model, guide, x).backward()
    for i, step in enumerate(guide.flows):
        grads = [p.grad for p in step.parameters()]
        if grads:
            assert any(g is not None and g.abs().sum() > 0 for g in grads), f"step {i}"


@pytest.mark.parametrize("name, options", CASES)
def test_state_dict_round_trip_gives_identical_log_weights(name, options, tmp_path):
    vae, guide = make(name, options)
    perturb(vae, guide)
    x = batch(4)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, vae, guide)
    pyro.set_rng_seed(123)  # a different RNG state: random permutations (IAF) differ at build
    vae2, guide2 = build_from_checkpoint(load_checkpoint(path))
    assert type(guide2) is type(guide) and guide2.spec == guide.spec
    a = evaluate(vae, guide, x, num_samples=16, seed=1)
    b = evaluate(vae2, guide2, x, num_samples=16, seed=1)
    assert a["iwae"] == b["iwae"] and a["elbo"] == b["elbo"]


def test_guide_state_dict_holds_only_the_guides_own_parameters():
    vae, guide = make("iaf", {"num_flows": 2})
    assert all(k.startswith("flows.") for k in guide.state_dict())
    assert "flows.0.nn.permutation" in guide.state_dict()  # the variable order is saved


def contract_vae(kind):
    if kind == "dense":
        return build_vae("dense", x_shape=(1, 28, 28), z_dim=Z_DIM, hidden=(16,))
    return build_vae("hvae", x_shape=(1, 28, 28), z_dim=2, levels=3, channels=[4, 8], hidden=16, mid=8)


@pytest.mark.parametrize("kind", ["dense", "hvae"])
@pytest.mark.parametrize("name", GUIDES.names())
def test_every_guide_built_by_name_honours_the_one_contract(name, kind):
    """No guide raises in its core method: ``forward`` samples the VAE's own latent sites and
    returns the joint z, ``location`` and ``reconstruct`` work, and a JointGuide's
    ``distribution`` is q of the joint latent. The VAE decides what the name builds (the
    hierarchical VAE: a layered guide), and ``gaussian`` is ``vae.guide`` itself."""
    vae = contract_vae(kind)
    options = guide_options(name)
    guide = build_guide(name, vae, **options)
    assert isinstance(guide, Guide) and guide.spec == {**GUIDES.options(name, options), "name": name}
    assert vae.make_guide({"name": name, **options}).spec == guide.spec
    if name == "gaussian":  # the default guide, which checkpoints and the trainer know by identity
        assert guide is vae.guide and vae.make_guide(None) is vae.guide
        assert vae.make_guide(guide.spec) is vae.guide and vae.guide.spec == {"name": "gaussian"}
    kinds = {"hvae": HierarchicalGuide, "dense": JointGuide if name == "gaussian" else FlowGuide}
    assert isinstance(guide, kinds[kind])
    assert isinstance(guide, JointGuide) == (kind == "dense")  # several sites: no one distribution
    x = batch(3)
    trace = poutine.trace(guide).get_trace(x, num_data=30)
    sites = {n: tuple(s["value"].shape) for n, s in trace.nodes.items()
             if s["type"] == "sample" and not site_is_subsample(s)}
    assert sites == {n: (3, d) for n, d in vae.latent_sites.items()}
    joint = trace.nodes["_RETURN"]["value"]
    assert joint.shape == (3, vae.z_dim)
    assert torch.equal(joint, vae.join_latents({n: trace.nodes[n]["value"] for n in vae.latent_sites}))
    assert guide.location(x).shape == (3, vae.z_dim) and guide.reconstruct(x).shape == x.shape
    if isinstance(guide, JointGuide):
        q = guide.distribution(x)
        assert q.batch_shape == (3,) and q.event_shape == (vae.z_dim,)
    assert torch.isfinite(torch.tensor(Trace_ELBO(max_plate_nesting=1).loss(vae.model, guide, x)))


@pytest.mark.parametrize("kind", ["dense", "hvae"])
@pytest.mark.parametrize("name", GUIDES.names())
def test_models_and_guides_check_their_input_once_per_call(name, kind, monkeypatch):
    vae = contract_vae(kind)
    guide = build_guide(name, vae, **guide_options(name))
    calls, check = [], vae.check_x
    monkeypatch.setattr(vae, "check_x", lambda x, *args: calls.append(1) or check(x, *args))
    x = batch(2)
    public = [lambda: guide(x), lambda: guide.location(x), lambda: guide.reconstruct(x),
              lambda: vae.model(x), lambda: vae.latent_model(x), lambda: vae.reconstruct(x, guide)]
    if isinstance(guide, JointGuide):
        public.append(lambda: guide.distribution(x))
    for call in public:
        calls.clear()
        call()
        assert len(calls) == 1


@pytest.mark.parametrize("steps", STEPS, ids=[s.name for s in STEPS])
def test_the_options_of_a_flow_guide_are_the_real_signature_of_its_factory(steps):
    """The registry reads the options of a flow guide from its registered factory, the
    row's ``guide`` method: a real, annotated signature, nothing faked."""
    factory = GUIDES.get(steps.name)
    assert inspect.ismethod(factory) and factory.__self__ is steps and "__signature__" not in dir(type(steps))
    params = list(inspect.signature(factory).parameters.values())
    assert params[0].name == "vae"
    own = {"sylvester": {"variant": "orthogonal", "num_ortho": None, "num_householder": 8},
           "spline": {"count_bins": 8, "bound": 5.0}}.get(steps.name, {})
    expected = {"num_flows": 4, "hidden_dims": None, **own}
    assert {p.name: p.default for p in params[1:]} == expected
    assert GUIDES.options(steps.name, {}) == expected  # what build_guide checks and records
    vae = contract_vae("dense")
    with pytest.raises(ConfigError, match=f"unknown option flows for guide '{steps.name}'; valid options: "
                                          + ", ".join(expected)):
        build_guide(steps.name, vae, flows=2)
    with pytest.raises(ConfigError, match=f"option num_flows of guide '{steps.name}' must be an integer"):
        build_guide(steps.name, vae, num_flows="2")


QUICK = ["--train-size", "200", "--test-size", "40", "--set", "hidden=[32]", "--z-dim", "4",
         "--iwae-samples", "20", "--no-progress", "--batch-size", "50"]


# Each CLI run costs seconds (data, figures, checkpoints): the default run takes one flow
# guide here and sylvester in the test below; `pytest -m slow` takes every flow guide.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n == "iaf" else pytest.mark.slow)
    for n in GUIDES.names() if n != "gaussian"
])
def test_cli_trains_evaluates_and_samples_every_flow_guide(name, tmp_path, capsys):
    run = str(tmp_path / name)
    assert main(["train", "--guide", name, "--flows", "2", "--epochs", "1", "--out", run, *QUICK]) == 0
    trained = json.load(open(os.path.join(run, "eval.json")))
    assert main(["evaluate", run, "--iwae-samples", "20", "--no-progress"]) == 0
    evaluated = json.load(open(os.path.join(run, "eval.json")))
    # the rebuilt guide is the trained one: the same k and seed give the same numbers
    assert evaluated["nll"] == trained["nll"] and evaluated["elbo"] == trained["elbo"]
    assert main(["sample", run, "--n", "4"]) == 0
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["guide"]["name"] == name and config["guide"]["num_flows"] == 2
    capsys.readouterr()


def test_run_directory_rebuilds_a_sylvester_variant_and_resumes(tmp_path, capsys):
    run = str(tmp_path / "syl")
    argv = ["train", "--guide", "sylvester", "--flows", "3", "--guide-set", "variant=triangular",
            "--epochs", "1", "--out", run, *QUICK]
    assert main(argv) == 0
    vae, guide, config, _ = load_run(run)
    assert guide.spec["name"] == "sylvester" and isinstance(guide, FlowGuide)
    assert guide.spec["variant"] == "triangular" and len(guide.flows) == 3
    assert [bool(step.param_map.reverse) for step in guide.flows] == [False, True, False]
    assert main(["train", "--resume", "--out", run, "--epochs", "2", "--no-progress"]) == 0
    _, resumed, config, payload = load_run(run)
    assert payload["trainer"]["epoch"] == 2 and resumed.spec == guide.spec
    assert main(["train", "--resume", "--out", run, "--epochs", "3", "--guide-set", "variant=orthogonal"]) == 2
    assert "cannot change a run being resumed" in capsys.readouterr().err


def test_bad_guide_options_are_refused_in_one_line(tmp_path, capsys):
    vae = build_vae("dense", x_shape=(1, 28, 28), z_dim=4, hidden=(16,))
    with pytest.raises(ConfigError, match="unknown option flows .* valid options: num_flows"):
        build_guide("planar", vae, flows=3)
    with pytest.raises(ConfigError, match="num_flows must be a positive integer"):
        build_guide("iaf", vae, num_flows=0)
    with pytest.raises(ConfigError, match="valid variants: orthogonal, householder, triangular"):
        build_guide("sylvester", vae, variant="cayley")
    with pytest.raises(ConfigError, match="num_ortho"):
        build_guide("sylvester", vae, num_ortho=5)
    with pytest.raises(ConfigError, match="hidden_dims"):
        build_guide("iaf", vae, hidden_dims=[2])  # a MADE layer narrower than z_dim
    with pytest.raises(ConfigError, match="option bound of guide 'spline' must be a number"):
        build_guide("spline", vae, bound="wide")  # what `--guide-set bound=wide` passes
    with pytest.raises(ConfigError, match="unknown option num_flows for guide 'gaussian'"):
        build_guide("gaussian", vae, num_flows=2)
    code = main(["train", "--guide", "sylvester", "--guide-set", "variant=cayley",
                 "--out", str(tmp_path / "r"), *QUICK])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "valid variants" in err
    assert not os.path.exists(tmp_path / "r")
    assert main(["train", "--guide-set", "variant", "--out", str(tmp_path / "r"), *QUICK]) == 2
    assert "--guide-set expects KEY=VALUE" in capsys.readouterr().err


def test_flow_guide_reconstructs_through_its_flows():
    vae, guide = make("realnvp", {"num_flows": 2})
    perturb(guide)
    x = batch(3)
    loc, _ = vae.encoder.loc_scale(vae.encoder.features(x))
    z = guide.location(x)
    assert not torch.allclose(z, loc)  # the flows moved the base mean
    expected = vae.likelihood.mean(vae.decoder(z))
    assert torch.allclose(guide.reconstruct(x), expected)
    gauss = build_guide("gaussian", vae)
    assert torch.allclose(gauss.reconstruct(x), vae.reconstruct(x))
