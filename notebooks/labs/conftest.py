"""The lab notebooks are not run under nbval: their blanks fail their checks by design (each check cell prints
"✗ not yet"). tests/test_exercises.py executes them instead and asserts exactly that; the solution notebooks in
notebooks/solutions/ run under nbval like every other notebook."""
collect_ignore_glob = ["*.ipynb", "src/*"]
