"""Experiment configs: `--config=configs/<name>.py:<key=value,flag,...>`."""
