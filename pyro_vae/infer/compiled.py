"""A compiled training step that keeps the Pyro program as the definition of the loss.

Pyro's effect handlers (``trace``, ``replay``, the ``"data"`` plate, ``poutine.scale``) run
in Python at every step: on a small network that bookkeeping, not the arithmetic, is the
cost of a step. ``torch.compile`` over the ``ELBOModule`` itself does not remove it —
dynamo breaks its graph inside Pyro's messengers (``Message`` is a ``TypedDict`` with
optional keys, ``_bound_partial``, ``importlib``) and the guards of the pieces cost more
than they save (measured: 3.3 ms against 2.6 ms eager per step of the tiny dense VAE).

So the structure is captured once instead: :class:`CompiledLoss` runs the loss module's
forward — the Pyro program, every handler — once under
:func:`torch.fx.experimental.proxy_tensor.make_fx`, which records the tensor operations it
performs (the networks, the reparameterized draws, the log-densities, the plate's N / B
scale) as one graph of ATen operations, and hands that graph to ``torch.compile``
(inductor), where it has no graph break. Later steps run the compiled graph; Pyro's Python
does not run again. ``fallback_random=True`` makes the compiled draws call torch's own
random functions in the same order, so a compiled step is the eager step — same noise,
same loss, same gradients up to float reassociation (tested for every model and guide).

What the capture bakes in is checked at every step (the guard, :meth:`CompiledLoss.key`):
the shape, dtype and device of the batch, ``num_data``, whether the KL weight is 1 (the
``poutine.scale`` of the latent sites is there or not) and train/eval mode; a new value
captures a new graph (a smaller last batch). The KL weight itself is an input of the graph,
a 0-d tensor, so the epochs of a warm-up share one graph instead of compiling one each. Python
state that the program reads and that changes during training — e.g. the data-dependent
initialisation of ActNorm — must change before the capture: the first call of every key
runs eagerly. State the guard cannot see is looked for by a check of a captured step
against the program, at the start of some epochs (:meth:`CompiledLoss.verify_next`). A
model whose capture, compilation or check fails falls back to eager, with one line through
``log``.

Without a compiler (``compile=False``, the engine's default step) the captured graph is
*replayed*: its ATen operations run eagerly, one by one, with autograd as usual — the
same kernels in the same order as the Pyro program's, so the same loss and gradients to
the bit (tested), without Pyro's Python per step and without a compile time. The capture
is taken before dispatch (``pre_dispatch=True``): a ``detach`` stays a gradient stop (a
capture after dispatch records it as an ``alias``, through which gradients flow), and the
operations are those the program called (``linear``, not ``t`` + ``addmm``).
:func:`simplify` drops what the replay need not run: operations whose results nothing
uses, and identities (``+ 0``, ``× 1``, an ``expand`` or a broadcast to the shape a
tensor already has).

On a GPU, ``mode="reduce-overhead"`` replays the compiled step as a CUDA graph (shapes are
static per key).
"""

from __future__ import annotations

import contextlib
import operator
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn
from torch.func import functional_call
from torch.fx import GraphModule, Node
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten

#: Options of inductor for the captured graph: random ops call torch's own generators, so a
#: compiled step draws exactly the eager step's noise (and a resumed run continues exactly).
INDUCTOR_OPTIONS = {"fallback_random": True}


@contextlib.contextmanager
def _aside(x: Tensor) -> Iterator[None]:
    """Run a capture (or a probe of the guide) aside from the training: it draws the step's
    noise, so the generators are put back where they were — it costs the run nothing and the
    first compiled step draws what eager would; and Pyro's validation, which reads values (a
    graph cannot branch on them), is off: the data were checked when loaded, as the eager
    engine assumes too."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), \
            pyro.validation_enabled(False):
        yield


def _meta(node: object) -> Optional[Tensor]:
    return node.meta.get("val") if isinstance(node, Node) else None


def _same_tensor(a: object, b: Node) -> bool:
    """Whether node ``a`` holds a tensor of ``b``'s shape, dtype and device (so ``b`` may be
    replaced by ``a``)."""
    va, vb = _meta(a), _meta(b)
    return isinstance(va, Tensor) and isinstance(vb, Tensor) and va.shape == vb.shape \
        and va.dtype == vb.dtype and va.device == vb.device


def _identity_of(node: Node) -> Optional[Node]:
    """The node whose tensor ``node`` merely repeats (value and gradient), or ``None``."""
    if node.op != "call_function" or node.kwargs:
        return None
    target, args = node.target, node.args
    constant = {aten.add.Tensor: 0, aten.sub.Tensor: 0, aten.mul.Tensor: 1, aten.div.Tensor: 1}.get(target)
    if constant is not None and len(args) == 2 and type(args[1]) in (int, float) and args[1] == constant:
        source = args[0]
    elif target is aten.expand.default:
        source = args[0]
    elif target is operator.getitem and isinstance(args[0], Node) \
            and args[0].target is aten.broadcast_tensors.default:
        source = args[0].args[0][args[1]]
    else:
        return None
    return source if _same_tensor(source, node) else None


def simplify(graph: GraphModule) -> GraphModule:
    """Remove from a captured graph the operations a replay need not run: identities and
    operations whose results are unused (an in-place ``detach_`` of an unused constant
    included), in place. Nothing is merged or reordered, so what remains computes the same
    values and gradients to the bit. torch.fx offers dead-code elimination, which this
    uses, but no folding of identities, hence this pass."""
    mutated = {n.args[0] for n in graph.graph.nodes
               if n.op == "call_function" and getattr(getattr(n.target, "_schema", None), "is_mutable", False)}
    for node in list(graph.graph.nodes):
        source = _identity_of(node)
        if source is not None and node not in mutated and source not in mutated:
            node.replace_all_uses_with(source)
    for node in reversed(list(graph.graph.nodes)):  # an unused detach_ of a fresh constant
        if node.target is aten.detach_.default and not node.users and len(node.args[0].users) == 1 \
                and node.args[0].target is aten.lift_fresh_copy.default:
            graph.graph.erase_node(node)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Undo the in-place updates of ``module``'s buffers (BatchNorm's running statistics)
    by a run of the program aside from the training: a capture, a check."""
    buffers = [b for _, b in module.named_buffers()]
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def _python_state(module: nn.Module) -> tuple:
    """The plain Python attributes (numbers, strings, flags, ``None``) of ``module`` and its
    submodules: what a captured graph may have baked in without a guard seeing it change."""
    return tuple(tuple(sorted((k, v) for k, v in vars(m).items() if isinstance(v, (bool, int, float, str, type(None)))))
                 for m in module.modules())


def _rng_state(x: Tensor) -> tuple:
    """The state of torch's generators that a step on ``x`` draws from: the CPU's, and the
    GPU's where ``x`` is."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.device.type == "cuda" else None


def _set_rng_state(x: Tensor, state: tuple) -> None:
    """Put the generators of :func:`_rng_state` back to ``state``."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], x.device)


class CompiledLoss(nn.Module):
    """``loss`` (an ``ELBOModule``, or any module ``loss(x, num_data=…, kl_scale=…)`` whose
    forward is a pure function of its parameters, buffers and ``x``), captured per guard key
    and compiled — or, with ``compile=False``, replayed.

    Args:
        loss: the loss module (its parameters are this module's).
        log: where the one line of a fallback to eager goes.
        mode: ``torch.compile``'s mode (``None``: its default; ``"reduce-overhead"``: CUDA graphs).
        compile: compile the captured graph with ``torch.compile``; ``False``: replay it
            (:func:`simplify`), the same loss and gradients as eager to the bit.

    Example:
        >>> from pyro_vae import build_vae
        >>> from pyro_vae.infer.elbo import SyncFreeTrace_ELBO
        >>> vae = build_vae("dense", (1, 4, 4), z_dim=2, hidden_dims=(8,))
        >>> compiled = CompiledLoss(SyncFreeTrace_ELBO()(vae, vae.guide))
        >>> x = torch.ones(3, 1, 4, 4)
        >>> first = compiled(x, num_data=3)   # eager: the first call of a key
        >>> loss = compiled(x, num_data=3)    # captured, compiled, run
        >>> sorted(compiled.graphs) == [compiled.key(x, 3, 1.0)], loss.requires_grad
        (True, True)
    """

    def __init__(self, loss: nn.Module, log: Callable[[str], None] = print, mode: Optional[str] = None,
                 compile: bool = True) -> None:
        super().__init__()
        self.loss = loss
        self.log = log
        self.mode = mode
        self.compile = compile
        #: guard key → the compiled graph and the tensors it takes (``None``: seen once, so
        #: far run eagerly)
        self.graphs: Dict[Hashable, Optional[Tuple[Callable[..., Tensor], List[Tensor]]]] = {}
        #: why compiling failed, once it has (then every step is eager)
        self.failed: Optional[str] = None
        #: whether the next captured step is checked against the eager program (:meth:`verify_next`)
        self._check = False
        self._epochs = 0  # calls of verify_next
        self._state: Optional[tuple] = None  # the modules' plain Python attributes at the last one

    def key(self, x: Tensor, num_data: Optional[int], kl_scale: float) -> Hashable:
        """What a captured graph assumes: the batch's shape, dtype and device, ``num_data``,
        whether the KL weight is 1, and whether the model and guide are in training mode
        (dropout)."""
        return (tuple(x.shape), x.dtype, x.device, num_data, float(kl_scale) == 1.0,
                tuple(m.training for m in self.loss.children()))

    def _tensors(self) -> Tuple[List[str], List[Tensor]]:
        """The graph's inputs besides ``x``: the parameters and the buffers, so that a buffer
        the program updates in place (BatchNorm's running statistics) is updated by every
        replayed step. Python that reads a buffer's value (a branch on it) fails the
        capture: eager, after one line."""
        named = list(self.loss.named_parameters()) + list(self.loss.named_buffers())
        return [n for n, _ in named], [t for _, t in named]

    def _capture(self, x: Tensor, num_data: Optional[int],
                 kl_scale: float) -> Tuple[Callable[..., Tensor], List[Tensor]]:
        self._check_reparameterized(x, num_data, kl_scale)
        names, tensors = self._tensors()

        def step(tensors: List[Tensor], x: Tensor, beta: Tensor) -> Tensor:
            # at 1 the program scales nothing (plates.kl_scaled), which the key records
            return functional_call(self.loss, dict(zip(names, tensors)), (x,),
                                   {"num_data": num_data, "kl_scale": 1.0 if kl_scale == 1.0 else beta})

        with _aside(x), _buffers_kept(self.loss):
            graph = make_fx(step, pre_dispatch=True)(tensors, x, self._beta(x, kl_scale))
        if not self.compile:
            return simplify(graph), tensors
        compiled = torch.compile(graph, mode=self.mode, fullgraph=True, dynamic=False,
                                 options=None if self.mode else INDUCTOR_OPTIONS)
        return compiled, tensors

    def forward(self, x: Tensor, num_data: Optional[int] = None, kl_scale: float = 1.0) -> Tensor:
        key = self.key(x, num_data, kl_scale)
        if self.failed is not None or key not in self.graphs:
            self.graphs.setdefault(key, None)  # seen once: this call runs eagerly
            return self.loss(x, num_data=num_data, kl_scale=kl_scale)
        captured = self.graphs[key]
        if captured is None:
            try:
                captured = self.graphs[key] = self._capture(x, num_data, kl_scale)
            except Exception as err:  # noqa: BLE001 - any failure of capture or compiler: eager
                return self._fall_back(err, x, num_data, kl_scale)
        graph, tensors = captured
        expected = state = None
        if self._check:  # this step against the program run afresh, same batch and noise
            self._check = False
            state = _rng_state(x)
            with _aside(x), _buffers_kept(self.loss), torch.no_grad():
                expected = self.loss(x, num_data=num_data, kl_scale=kl_scale)
        try:
            value = graph(tensors, x, self._beta(x, kl_scale))
        except Exception as err:  # noqa: BLE001 - inductor compiles lazily, at the first call
            return self._fall_back(err, x, num_data, kl_scale)
        if expected is not None and not self._agrees(value.detach(), expected):
            _set_rng_state(x, state)  # this step eagerly, with the noise the replay drew
            return self._fall_back(RuntimeError("Python state that the model reads has changed since the "
                                                "capture (a schedule kept in an attribute?)"),
                                   x, num_data, kl_scale)
        return value

    def verify_next(self) -> None:
        """Check the next captured step against the Pyro program run afresh on the same batch
        and noise, when it is due (the trainer calls this at the start of every epoch). A
        graph holds what the program read when it was captured; Python state that the model
        reads and that changes during training — an annealing schedule kept in an
        attribute, say — is invisible to the guard, so a mismatch means the program cannot
        be captured: that step and every later one run eagerly, after one line. Due when a
        plain Python attribute of a module of the model or guide (a number, a string, a
        flag) has changed since the last call, and at the 1st, 2nd, 4th, 8th, … call for
        state kept elsewhere; each check costs one forward without gradients. A replay
        must agree to the bit, a compiled step to 1e-4 relative (inductor reassociates sums)."""
        self._epochs += 1
        state = _python_state(self.loss)
        changed, self._state = state != self._state, state
        due = changed or self._epochs & (self._epochs - 1) == 0
        self._check = due and self.failed is None and any(g is not None for g in self.graphs.values())

    def _agrees(self, value: Tensor, expected: Tensor) -> bool:
        if not self.compile:
            return torch.equal(value, expected)
        return bool(torch.allclose(value, expected, rtol=1e-4, atol=0.0))

    def _check_reparameterized(self, x: Tensor, num_data: Optional[int], kl_scale: float) -> None:
        """Refuse (→ eager) a guide with a latent site drawn without ``rsample``: its gradient
        is Pyro's score-function surrogate, which the compiled step has not been shown to
        reproduce (the semi-supervised VAE's label drawn by a plain trace: the captured loss
        matched, its gradients did not)."""
        guide = getattr(self.loss, "guide", None)
        if guide is None:
            return
        with _aside(x), torch.no_grad():
            trace = poutine.trace(guide).get_trace(x, num_data=num_data, kl_scale=kl_scale)
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site) \
                    and not site["fn"].has_rsample:
                raise NotImplementedError(f"the guide draws {name!r} without reparameterization "
                                          f"(score-function gradients)")

    @staticmethod
    def _beta(x: Tensor, kl_scale: float) -> Tensor:
        """The KL weight as the graph's 0-d input, in float64: the scale arithmetic that Pyro
        does on Python floats (β · N / B) is then the same double-precision arithmetic in the
        graph, and a 0-d tensor promotes like a Python float (the log-densities it scales
        keep their dtype) — so a replayed step scales by the eager step's number exactly."""
        return torch.tensor(float(kl_scale), dtype=torch.float64, device=x.device)

    def _fall_back(self, err: Exception, x: Tensor, num_data: Optional[int], kl_scale: float) -> Tensor:
        self.failed = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else ''}"
        self.graphs.clear()
        if self.compile:
            self.log(f"compile: this model's step could not be compiled ({self.failed}); training eagerly")
        else:
            self.log(f"capture: this model's step could not be captured ({self.failed}); Pyro runs it "
                     f"at every step")
        return self.loss(x, num_data=num_data, kl_scale=kl_scale)
