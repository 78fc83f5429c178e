"""Training: tiny model factory, model loading, collators and the Trainer wrapper."""
