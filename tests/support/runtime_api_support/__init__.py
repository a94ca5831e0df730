"""What the end-to-end tests (tests/e2e) and the benchmarks (bench/) share: starting and stopping
the service, waiting, and /proc helpers. One package instead of path edits in each script: it is
importable once `eval "$(scripts/python.sh)"` has put tests/support on PYTHONPATH."""
