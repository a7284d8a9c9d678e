"""Training a sweep: run folders, locks, the trainer and its checkpoints, the runner and its launchers
(torchrun, Slurm), dashboards, evaluation and progress. Imports eval/, plan/, cost/, data/, models/ and the
top level."""
