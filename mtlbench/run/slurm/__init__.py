"""Sweeps on Slurm: typed resources (:mod:`.resources`), the submissions ledger
(:mod:`.ledger`), the cluster's limits (:mod:`.limits`), arrays split and held to fit them
(:mod:`.batches`, :mod:`.held`) and the executor (:mod:`.executor`, the only module that
imports submitit).

Importing this package imports nothing heavy: :mod:`mtlbench.run.state` reads the ledger without
loading submitit.
"""
