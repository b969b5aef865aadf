"""Running sweeps: which trials are left, who runs them, and where they stand.

* :mod:`.base`: the executor interface, :func:`~.base.run_one` (one trial, claimed, with its
  progress reported), :func:`~.base.make_executor`, the closing summary;
* :mod:`.local`: in this process or a process pool;
* :mod:`.slurm`: typed resources, the submissions ledger, the Slurm executor (submitit);
* :mod:`.state`: the one trial-state resolver (records, leases, ledger, ``squeue``/``sacct``,
  pids), with :func:`~.state.pending`;
* :mod:`.lease`: a trial is claimed before it runs; :mod:`.progress`: per-trial progress and
  the time left; :mod:`.sync`: the file lock and the periodic thread both use;
* :mod:`.status_cli`: ``mtlbench status``, its summary in :mod:`.status_summary`.

The import graph is one-way: ``sync`` <- ``lease`` <- ``progress`` <- ``state`` <- ``base`` <-
``local``, ``slurm.executor``; only ``slurm.executor`` (loaded for ``kind: slurm``) imports
submitit.
"""
