"""Synthetic pose-video pairs: random rigs, skinned, animated, filmed and rendered headless.

Training data for the bundled model, made by the add-on itself; the same dressing, motion and
rendering also turn Blender's metarigs into the held-out evaluation clips.
"""

METARIGS = ("human", "basic_human", "bird", "cat", "horse", "shark", "wolf")
"""Blender's shipped Rigify metarigs: the evaluation set, never used for training."""
