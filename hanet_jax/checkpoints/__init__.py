"""Checkpoints: the format on disk (format.py), a training workdir's Orbax manager (training.py)
and the one loader every consumer uses (loading.py)."""
