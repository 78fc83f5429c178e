"""`instructkit run`: recipes (recipe.py), stage keys and markers (stage.py), stage inputs (inputs.py),
the stages themselves (stages.py), the runner (runner.py), sweeps (sweep.py) and run reports (report.py)."""
