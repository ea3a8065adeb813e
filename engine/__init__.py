"""The high layer: options, checkpoints, training, evaluation and inference (imports models/, data/ and utils/)."""
import os

# Before torch loads OpenMP (when engine is imported first): see main.py.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
