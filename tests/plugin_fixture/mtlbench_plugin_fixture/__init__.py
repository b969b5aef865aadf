"""mtlbench's plug-in test fixture: the method ``fixture_inverse_loss`` (methods.py) and the
benchmark ``fixture_sines`` (benchmark.py), found through the package's entry points."""
