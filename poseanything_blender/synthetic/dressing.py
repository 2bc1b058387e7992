"""Make any armature look like a creature in a place: a skinned body, a textured world, lights.

The model learns appearance from these renders, so what varies here is what a user's subject
and set vary in: colours, patterns, thickness, ground, props, sky and lighting. The body is one
capsule per bone, rigidly weighted to it, because that deforms correctly for every topology
(a skin modifier needs a clean tree and fails on metarig faces and fingers). Rendering is
Workbench, which shows image textures and studio lighting but no scene lights, so "lights"
here are Workbench's studio light, its rotation, shadow direction and cavity.
"""

from __future__ import annotations

import bmesh
import bpy
import numpy as np

from ..blender_versions import new_node_material

CAPSULE_RINGS = 8
CAPSULE_SEGMENTS = 8
TEXTURE_SIZE = 64
STUDIO_LIGHTS = ("Default", "basic.sl", "outdoor.sl", "paint.sl", "rim.sl", "studio.sl")
PROP_SHAPES = ("cube", "cylinder", "cone", "sphere")
SHADOW_CHANCE = 0.3
"""Workbench's stencil shadows triple a clip's render time, so only some clips have them."""


def _random_colors(rng: np.random.Generator, count: int) -> np.ndarray:
    """Colours spread over hue, with saturation and value kept off the dull extremes."""
    hue = (rng.uniform() + np.arange(count) * rng.uniform(0.15, 0.5)) % 1.0
    saturation = rng.uniform(0.25, 0.9, count)
    value = rng.uniform(0.3, 1.0, count)
    # HSV to RGB, vectorised: each channel is value minus a clipped triangle wave in hue.
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0
    triangle = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[:, None] * (1.0 - saturation[:, None] * triangle)


def random_pattern(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A tileable (size, size, 4) float RGBA texture: checks, stripes, spots or smooth noise
    mixing two or three random colours."""
    y, x = np.mgrid[0:size, 0:size] / size
    kind = int(rng.integers(4))
    cells = int(rng.integers(2, 9))
    if kind == 0:
        weight = ((np.floor(x * cells) + np.floor(y * cells)) % 2)[..., None]
    elif kind == 1:
        slope = int(rng.integers(-2, 3))
        weight = (np.sin(2 * np.pi * cells * (x + slope * y)) > 0)[..., None].astype(float)
    elif kind == 2:
        cx, cy = (x * cells) % 1.0 - 0.5, (y * cells) % 1.0 - 0.5
        weight = (np.hypot(cx, cy) < rng.uniform(0.15, 0.4))[..., None].astype(float)
    else:
        coarse = rng.uniform(size=(cells, cells))
        index = (np.arange(size) * cells) // size
        blur = np.fft.ifft2(np.fft.fft2(coarse[index][:, index]) * _gaussian_kernel(size, cells))
        weight = np.real(blur)[..., None]
        weight = (weight - weight.min()) / max(np.ptp(weight), 1e-6)
    colors = _random_colors(rng, 3)
    rgb = colors[0] * (1.0 - weight) + colors[1] * weight
    if rng.random() < 0.4:  # a few dark or light speckles break up flat areas
        speckle = rng.random((size, size, 1)) < 0.05
        rgb = np.where(speckle, colors[2], rgb)
    return np.concatenate([rgb, np.ones((size, size, 1))], axis=2)


def _gaussian_kernel(size: int, cells: int) -> np.ndarray:
    """Fourier-domain blur that turns nearest-neighbour cells into smooth, tileable blobs."""
    frequency = np.fft.fftfreq(size)
    squared = frequency[:, None] ** 2 + frequency[None, :] ** 2
    return np.exp(-squared * (size / cells) ** 2 * 4.0)


def textured_material(name: str, rng: np.random.Generator) -> bpy.types.Material:
    """A material whose active node is a random image texture: Workbench's Texture colour
    mode shows the active image node, and the viewport colour matches its mean."""
    pixels = random_pattern(rng)
    image = bpy.data.images.new(name, TEXTURE_SIZE, TEXTURE_SIZE, alpha=False)
    image.pixels.foreach_set(pixels.astype(np.float32).ravel())
    material = new_node_material(name)
    nodes = material.node_tree.nodes
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Closest" if rng.random() < 0.5 else "Linear"
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    material.node_tree.links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    nodes.active = texture
    material.diffuse_color = (*pixels[..., :3].mean(axis=(0, 1)), 1.0)
    return material


def _capsule_grid(
    lengths: np.ndarray, radii: np.ndarray, tapers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bone capsule vertices in bone space (+Y along the bone) and their UVs.

    Returns (B, RINGS, SEGMENTS + 1, 3) positions and (RINGS, SEGMENTS + 1, 2) unit UVs; the
    seam column is duplicated so UVs wrap without a jump. Rings follow a squircle profile that
    overhangs each joint by 60% of the radius, so neighbouring capsules overlap at joints.
    """
    t = np.linspace(0.0, 1.0, CAPSULE_RINGS)
    angle = np.linspace(0.0, 2.0 * np.pi, CAPSULE_SEGMENTS + 1)
    profile = (1.0 - np.abs(2.0 * t - 1.0) ** 4) ** 0.25
    overhang = 0.6 * radii[:, None]
    along = -overhang + t * (lengths[:, None] + 2.0 * overhang)
    ring_radius = radii[:, None] * profile * (1.0 + (tapers[:, None] - 1.0) * t)
    positions = np.stack(
        np.broadcast_arrays(
            ring_radius[:, :, None] * np.cos(angle),
            along[:, :, None],
            ring_radius[:, :, None] * np.sin(angle),
        ),
        axis=-1,
    )
    uv = np.stack(np.meshgrid(angle / (2.0 * np.pi), t, indexing="xy"), axis=-1)
    return positions, uv


def _grid_quads(count: int) -> np.ndarray:
    """(count * quads, 4) vertex indices of every capsule's quads, wound outward."""
    ring, segment = np.mgrid[0 : CAPSULE_RINGS - 1, 0:CAPSULE_SEGMENTS]
    columns = CAPSULE_SEGMENTS + 1
    base = (ring * columns + segment).ravel()
    quad = np.stack([base, base + columns, base + columns + 1, base + 1], axis=1)
    per_capsule = CAPSULE_RINGS * columns
    return (np.arange(count)[:, None, None] * per_capsule + quad[None]).reshape(-1, 4)


def _bone_materials(parents: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """A material slot per bone: children mostly wear their parent's, so colours come in
    limb-sized patches rather than confetti."""
    slots = np.zeros(len(parents), dtype=np.int64)
    switch = rng.random(len(parents)) < 0.25
    fresh = rng.integers(0, count, len(parents))
    for bone, parent in enumerate(parents):  # parents precede children in Armature.bones
        inherited = slots[parent] if parent >= 0 else fresh[bone]
        slots[bone] = fresh[bone] if switch[bone] else inherited
    return slots


def skin_armature(
    armature_obj: bpy.types.Object, collection: bpy.types.Collection, rng: np.random.Generator
) -> bpy.types.Object:
    """A capsule-per-bone mesh parented to the armature, deformed by it, with random textures.

    Every skinned bone is set to deform, so metarig bones that Rigify marks non-deforming
    (heels, face helpers) still carry their capsule along.
    """
    bones = armature_obj.data.bones
    count = len(bones)
    matrices = np.empty(count * 16)
    bones.foreach_get("matrix_local", matrices)
    matrices = matrices.reshape(count, 4, 4).transpose(0, 2, 1)
    lengths = np.empty(count)
    bones.foreach_get("length", lengths)
    names = [bone.name for bone in bones]
    parents = np.array([names.index(b.parent.name) if b.parent else -1 for b in bones])

    extent = max(float(np.ptp(matrices[:, :3, 3], axis=0).max()), float(lengths.max()))
    thickness = rng.uniform(0.12, 0.3) * rng.uniform(0.8, 1.25, count)
    # Bounded by the whole creature's size, so a snake's many short bones still make a body
    # that is visible at 128 pixels, and long bones do not become balloons.
    radii = np.clip(thickness * lengths, 0.03 * extent, 0.08 * extent)
    tapers = rng.uniform(0.55, 1.0, count)
    positions, uv = _capsule_grid(lengths, radii, tapers)
    world = (
        np.einsum("bij,brsj->brsi", matrices[:, :3, :3], positions) + matrices[:, None, None, :3, 3]
    )
    quads = _grid_quads(count)
    per_capsule = CAPSULE_RINGS * (CAPSULE_SEGMENTS + 1)

    mesh = bpy.data.meshes.new(f"{armature_obj.name}_body")
    mesh.from_pydata(world.reshape(-1, 3), [], quads)
    repeats = rng.integers(1, 3)
    stretch = (lengths + 1.2 * radii) / (2.0 * np.pi * radii) * repeats
    vertex_uv = (
        np.broadcast_to(uv, (count, *uv.shape))
        * np.stack([np.full(count, repeats), stretch], axis=1)[:, None, None, :]
    )
    flat_uv = vertex_uv.reshape(-1, 2)
    loop_uv = flat_uv[quads.ravel()]
    mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", loop_uv.astype(np.float32).ravel())

    materials = int(rng.integers(1, 4))
    for slot in range(materials):
        mesh.materials.append(textured_material(f"{armature_obj.name}_skin{slot}", rng))
    quads_per_capsule = (CAPSULE_RINGS - 1) * CAPSULE_SEGMENTS
    bone_slot = _bone_materials(parents, rng, materials)
    mesh.polygons.foreach_set("material_index", np.repeat(bone_slot, quads_per_capsule))
    mesh.shade_smooth()

    body = bpy.data.objects.new(mesh.name, mesh)
    collection.objects.link(body)
    body.parent = armature_obj
    for bone_index, bone in enumerate(bones):
        bone.use_deform = True
        group = body.vertex_groups.new(name=bone.name)
        start = bone_index * per_capsule
        group.add(range(start, start + per_capsule), 1.0, "REPLACE")
    modifier = body.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature_obj
    return body


def _primitive(shape: str, rng: np.random.Generator) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(f"prop_{shape}")
    bm = bmesh.new()
    if shape == "cube":
        bmesh.ops.create_cube(bm, size=1.0, calc_uvs=True)
    elif shape == "sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=16, v_segments=8, radius=0.5, calc_uvs=True)
    else:
        tip = 0.0 if shape == "cone" else 0.5
        bmesh.ops.create_cone(
            bm, cap_ends=True, segments=16, radius1=0.5, radius2=tip, depth=1.0, calc_uvs=True
        )
    bm.to_mesh(mesh)
    bm.free()
    return mesh


def _textured_object(
    collection: bpy.types.Collection, mesh: bpy.types.Mesh, rng: np.random.Generator
) -> bpy.types.Object:
    mesh.materials.append(textured_material(mesh.name, rng))
    obj = bpy.data.objects.new(mesh.name, mesh)
    collection.objects.link(obj)
    return obj


def _plane(name: str, half_size: float, tiles: float) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float) * half_size
    mesh.from_pydata(corners, [], [(0, 1, 2, 3)])
    uv = (corners[:, :2] / half_size * 0.5 + 0.5) * tiles
    mesh.uv_layers.new(name="UVMap").data.foreach_set("uv", uv.astype(np.float32).ravel())
    return mesh


def dress_set(
    collection: bpy.types.Collection,
    rng: np.random.Generator,
    subject_center: np.ndarray,
    subject_radius: float,
    camera_location: np.ndarray,
    ground_height: float,
) -> list[bpy.types.Object]:
    """A textured ground at ``ground_height``, sometimes a backdrop, and a few props around
    the subject.

    Textured surfaces make camera motion visible (a pan slides the ground's pattern). Props
    keep out of the cone between camera and subject so they never hide the subject at the
    first frame. Returns the set's objects, so the mask render can hide them.
    """
    center = np.array([subject_center[0], subject_center[1], ground_height])
    half_size = 40.0 * subject_radius
    tile = subject_radius * rng.uniform(0.3, 1.2)
    ground = _textured_object(collection, _plane("ground", half_size, half_size / tile), rng)
    ground.location = center
    objects = [ground]

    to_camera = camera_location[:2] - center[:2]
    camera_bearing = np.arctan2(to_camera[1], to_camera[0])
    if rng.random() < 0.5:
        backdrop_size = 8.0 * subject_radius
        backdrop = _textured_object(
            collection, _plane("backdrop", backdrop_size, backdrop_size / tile), rng
        )
        behind = camera_bearing + np.pi + rng.uniform(-0.4, 0.4)
        distance = subject_radius * rng.uniform(3.0, 6.0)
        backdrop.location = center + distance * np.array([np.cos(behind), np.sin(behind), 0.0])
        backdrop.rotation_euler = (np.pi / 2, 0.0, behind - np.pi / 2)
        objects.append(backdrop)

    props = int(rng.integers(2, 7))
    # Bearings at least 35 degrees off the camera's, so no prop stands in front of the subject.
    offsets = rng.uniform(np.radians(35), 2 * np.pi - np.radians(35), props)
    for offset in offsets:
        shape = PROP_SHAPES[int(rng.integers(len(PROP_SHAPES)))]
        prop = _textured_object(collection, _primitive(shape, rng), rng)
        dimensions = subject_radius * rng.uniform(0.2, 1.0, 3)
        bearing = camera_bearing + offset
        distance = subject_radius * rng.uniform(1.4, 5.0)
        prop.scale = dimensions
        prop.location = center + np.array(
            [distance * np.cos(bearing), distance * np.sin(bearing), dimensions[2] / 2]
        )
        prop.rotation_euler = (0.0, 0.0, rng.uniform(0, 2 * np.pi))
        objects.append(prop)
    return objects


def light_scene(scene: bpy.types.Scene, rng: np.random.Generator) -> None:
    """Random sky colour and Workbench lighting: studio light and its rotation, shadows from a
    random direction, cavity and specular. Meant for a scratch scene (nothing is restored)."""
    world = bpy.data.worlds.new(f"{scene.name}_sky")
    world.color = _random_colors(rng, 1)[0]
    scene.world = world
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.studio_light = STUDIO_LIGHTS[int(rng.integers(len(STUDIO_LIGHTS)))]
    shading.use_world_space_lighting = True
    shading.studiolight_rotate_z = rng.uniform(-np.pi, np.pi)
    shading.color_type = "TEXTURE"
    shading.show_shadows = bool(rng.random() < SHADOW_CHANCE)
    shading.shadow_intensity = rng.uniform(0.3, 0.7)
    shading.show_cavity = bool(rng.random() < 0.3)
    shading.show_specular_highlight = bool(rng.random() < 0.5)
    elevation = rng.uniform(0.3, 1.3)
    azimuth = rng.uniform(0, 2 * np.pi)
    scene.display.light_direction = (
        np.cos(elevation) * np.cos(azimuth),
        np.cos(elevation) * np.sin(azimuth),
        np.sin(elevation),
    )
