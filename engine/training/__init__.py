"""Training the bundled default model on synthetic clips, and evaluating models on held-out ones."""

from ..errors import BadInput


class TrainingError(BadInput):
    """Training or evaluation cannot run on these inputs (data, checkpoint, clips, settings);
    the message says what to do."""
