"""Launching sweeps beyond this machine: multi-process jobs, SLURM and Cloud TPU launchers."""
