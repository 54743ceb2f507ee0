"""Slurm: fleet leases allocations from a team's cluster through the cluster's own command-line tools.

For now only the command layer: commands.py (argv, runners, typed façade), parsing.py (typed
squeue/sacct output), errors.py (sbatch refusals as typed FleetErrors). See docs/slurm.md.
"""
