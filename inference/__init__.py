"""The pyro-vae application: run directories, checkpoints, figures and the ``pyro-vae``
command line, on top of the library's algorithms (:mod:`pyro_vae.infer`).

Modules: :mod:`.args` (the parser, derived from the options of each command in
:mod:`.settings`), :mod:`.config` (the typed run configuration and the per-model defaults),
:mod:`.io` (atomic writes, OS errors as one line), :mod:`.rundir` (the run-directory format,
what may be written where), :mod:`.checkpoint`, :mod:`.restore` (a run rebuilt from its
directory), :mod:`.signals` (SIGTERM like Ctrl-C), the commands :mod:`.train`,
:mod:`.evaluate`, :mod:`.sample`, :mod:`.posterior`, :mod:`.compare`, :mod:`.components`,
the figures :mod:`.plots`, :mod:`.posterior_plots`, and :mod:`.cli`. Importing this package
imports nothing else (the command line checks its arguments before torch is loaded).
"""
