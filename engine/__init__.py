"""The PoseAnything engine: shot folder in, video out. Never imports bpy.

Submodules that need torch import it themselves, so reading and writing shot folders
(``engine.shot``, ``engine.skeleton``, ``engine.camera``) works inside Blender's Python.
"""
