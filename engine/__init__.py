"""The PoseAnything engine: shot folder in, video out. Never imports bpy.

Rooms, lowest first (a room imports only rooms above it in this list, and nothing imports
``cli``; one exception: the pipeline finds model folders through ``checkpoints.weights``):

- ``errors``: the ``BadInput`` family every user-facing error belongs to, and the exit codes
- ``contract``: the shot folder and what is drawn from it (numpy only: Blender imports it)
- ``model``: the pose-conditioned video DiT with PTCM, codecs, text encoders
- ``inference``: the pipeline, its settings, sampler, guidance anchors and the reference warp
- ``checkpoints``: where models come from: the bundled one, Hugging Face, official weights, ONNX
- ``training``: training the default model and evaluating models
- ``render``: ``render_shot_folder`` and the model choice: one shot folder to one video
- ``batch``: many shot folders, in this process or on a Ray cluster
- ``cli``: the ``poseanything`` command

Beside the rooms, ``configs`` reads config dataclasses from JSON (pure Python, imports none of
them).
"""
