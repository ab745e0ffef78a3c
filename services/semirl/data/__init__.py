"""Datasets: reading a run spec's problem and preference sets (problems.py, preferences.py), the synthetic demo
task (synthetic.py), and turning public datasets into the spec's problem JSONL (prepare.py, sources.py;
`python -m semirl.data`)."""
