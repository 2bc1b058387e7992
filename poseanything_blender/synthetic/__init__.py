"""Synthetic pose-video pairs: random rigs, skinned, animated, filmed and rendered headless.

Training data for the bundled model, made by the add-on itself; the same dressing, motion and
rendering also turn Blender's metarigs into the held-out evaluation clips.
"""
