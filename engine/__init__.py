"""The high layer: options, checkpoints, training, evaluation and inference (imports models/, data/ and utils/)."""
