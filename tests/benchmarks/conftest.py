# The benchmarks are a script (python tests/benchmarks/bench.py), not tests: pytest collects nothing here.
collect_ignore_glob = ["*"]
