"""Benchmarks, soak and profiler. Run each as a module from the repository's root
(``.venv/bin/python -m bench.run``), so it imports the test kit the tests use (tests/peers.py
for processes and free ports, tests/fakes.py for hostile servers) rather than a copy."""
