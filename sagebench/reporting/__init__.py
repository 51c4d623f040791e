"""What a finished run shows: figures (``plots``) and the W&B run (``wandb``)."""
