"""The pyro-vae application: run directories, checkpoints, figures and the ``pyro-vae``
command line, on top of the library's algorithms (:mod:`pyro_vae.infer`).

Modules: :mod:`.config` (the typed run configuration and the train flags), :mod:`.io`
(atomic writes, OS errors as one line), :mod:`.checkpoint`, :mod:`.rundir` (the
run-directory format, what may be written where), :mod:`.signals` (SIGTERM like Ctrl-C),
the commands :mod:`.train`, :mod:`.evaluate`, :mod:`.sample`, :mod:`.posterior`, the
figures :mod:`.plots`, :mod:`.posterior_plots`, and :mod:`.cli`. Importing this package imports
nothing else (the command line checks its arguments before torch is loaded).
"""
