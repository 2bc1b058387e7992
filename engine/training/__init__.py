"""Training the bundled default model on synthetic clips, and evaluating models on held-out ones."""
