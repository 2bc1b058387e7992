"""The shot folder and what is drawn from it: numpy only, no torch, so Blender imports it."""
