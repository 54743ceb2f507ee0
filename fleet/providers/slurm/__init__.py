"""Slurm: fleet leases allocations from a team's cluster through the cluster's own command-line tools.

provider.py (SlurmProvider, provider = "slurm"), settings.py ([slurm]), node.py (the node step:
sshd + watchdog inside the job; node_job.py its dealings with the job), steps.py (starting it with
srun), commands.py (argv, runners, typed façade), ownership.py (which jobs are fleet's own),
parsing.py (typed squeue/sacct output), errors.py (typed refusals). See docs/slurm.md.
"""
