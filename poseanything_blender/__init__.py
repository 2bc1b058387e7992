"""The bpy side: gathers rigs, motion and cameras from a scene into plain numpy data."""
