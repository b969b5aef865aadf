"""Running sweeps: which trials are left, who runs them, and where they stand.

* :mod:`.options`: the spec's ``executor:`` section as typed options (read when it loads);
* :mod:`.driver`: the one sweep driver, plan -> claim -> run -> summary (``mtlbench sweep``);
* :mod:`.tuning`: the tuning stage, run (scores from records, selection, final runs);
* :mod:`.base`: the executor interface and the typed :class:`~.base.Batch` it runs,
  :func:`~.base.run_one` (one trial, claimed, with its progress reported),
  :func:`~.base.make_executor`;
* :mod:`.local`: in this process or a process pool;
* :mod:`.slurm`: typed resources, the submissions ledger, the Slurm executor (submitit);
* :mod:`.state`: the one trial-state resolver (records, leases, ledger, ``squeue``/``sacct``,
  pids), with :func:`~.state.pending_stages`;
* :mod:`.lease`: a trial is claimed before it runs; :mod:`.progress`: per-trial progress and
  the time left; :mod:`.sync`: the file lock and the periodic thread both use;
* :mod:`.status_cli`: ``mtlbench status``, its summary in :mod:`.status_summary`.

The import graph is one-way: ``sync`` <- ``lease`` <- ``progress`` <- ``state`` <- ``base`` <-
``local``, ``slurm.executor`` <- ``driver``; ``options`` and ``slurm.resources`` import only the
registry (the spec parser reads them); only ``slurm.executor`` (loaded for ``kind: slurm``)
imports
submitit.
"""
