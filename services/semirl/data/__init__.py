"""Turning public datasets into the run spec's problem JSONL (`python -m semirl.data`)."""
