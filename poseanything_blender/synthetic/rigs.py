"""Procedural armatures of many body plans, for training data only.

The model must learn to follow *any* skeleton, so training rigs vary what the metarigs (the
held-out evaluation set) keep fixed: the number of limbs, their depth, branching and
proportions. Each generator returns plain bone specs from a ``numpy.random.Generator`` (same
generator state, same rig), and ``build_armature`` turns them into a Blender armature.

Every bone starts at its parent's tail or head, so the skeleton graph is one connected tree:
limbs hang off short connector bones (hips, shoulders) rather than floating next to the body.
Coordinates: +Z up, -Y forward (Blender's front view), +X the creature's left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import bpy
import numpy as np

TOPOLOGY_KINDS = ("biped", "quadruped", "bird", "many_legged", "snake", "tentacles", "tree")
MAX_TREE_BONES = 40
"""A random tree stops branching here: beyond it, bones get too small to see at 128 px."""

UP = np.array([0.0, 0.0, 1.0])
DOWN = -UP
FORWARD = np.array([0.0, -1.0, 0.0])
BACK = -FORWARD
LEFT = np.array([1.0, 0.0, 0.0])


@dataclass(frozen=True)
class BoneSpec:
    """One bone at rest, armature space. ``parent`` indexes the spec list (-1: a root)."""

    name: str
    head: np.ndarray
    tail: np.ndarray
    parent: int


class _Skeleton:
    """Bone specs under construction, with the chain helpers every body plan uses."""

    def __init__(self, rng: np.random.Generator, jitter: float = 0.2) -> None:
        self.rng = rng
        self.jitter = jitter
        self.bones: list[BoneSpec] = []

    def vary(self, length: float) -> float:
        """A proportion drawn around ``length``, so no two creatures share a body plan."""
        return length * float(self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter))

    def bone(self, name: str, head: np.ndarray, tail: np.ndarray, parent: int) -> int:
        self.bones.append(BoneSpec(name, np.asarray(head, float), np.asarray(tail, float), parent))
        return len(self.bones) - 1

    def chain(
        self,
        name: str,
        parent: int,
        start: np.ndarray,
        directions: np.ndarray,
        lengths: np.ndarray,
        curl: float = 0.0,
    ) -> list[int]:
        """Connected bones along ``directions`` (one unit vector or one per bone), each turned
        by random noise of about ``curl`` radians so chains are not ruler-straight."""
        directions = np.broadcast_to(np.asarray(directions, float), (len(lengths), 3))
        indices = []
        head = np.asarray(start, float)
        for i, (direction, length) in enumerate(zip(directions, lengths, strict=True)):
            turned = direction + self.rng.normal(0.0, curl, 3) if curl else direction
            tail = head + length * turned / np.linalg.norm(turned)
            parent = self.bone(f"{name}.{i:02d}", head, tail, parent)
            indices.append(parent)
            head = tail
        return indices

    def tail(self, index: int) -> np.ndarray:
        return self.bones[index].tail

    def head(self, index: int) -> np.ndarray:
        return self.bones[index].head


def _mirror(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, float) * np.array([-1.0, 1.0, 1.0])


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, float)
    return vector / np.linalg.norm(vector)


def _paired_limbs(
    sk: _Skeleton,
    name: str,
    parent: int,
    anchor: np.ndarray,
    offset: np.ndarray,
    directions: np.ndarray,
    lengths: np.ndarray,
) -> None:
    """A left and right limb with the same proportions: a connector bone from ``anchor`` to the
    socket ``anchor + offset`` (mirrored on the right), then the limb chain."""
    for side, flip in (("L", np.asarray), ("R", _mirror)):
        socket = sk.bone(f"{name}_root.{side}", anchor, anchor + flip(offset), parent)
        sk.chain(f"{name}.{side}", socket, sk.tail(socket), flip(directions), lengths)


def _biped(sk: _Skeleton) -> None:
    leg = sk.vary(1.0)
    pelvis = sk.bone("pelvis", [0, 0, leg], [0, 0, leg + sk.vary(0.15)], -1)
    spine = sk.chain(
        "spine", pelvis, sk.tail(pelvis), UP, [sk.vary(0.5 / 3)] * int(sk.rng.integers(1, 4))
    )
    chest = spine[-1]
    sk.chain("neck", chest, sk.tail(chest), UP, [sk.vary(0.1), sk.vary(0.2)], 0.2)
    thigh, shin, foot = sk.vary(0.5) * leg, sk.vary(0.45) * leg, sk.vary(0.15)
    _paired_limbs(
        sk,
        "leg",
        pelvis,
        sk.head(pelvis),
        LEFT * sk.vary(0.12),
        np.stack([DOWN, DOWN, FORWARD]),
        np.array([thigh, shin, foot]),
    )
    spread = float(sk.rng.uniform(0.1, 1.2))  # A-pose to T-pose
    arm_direction = _unit(LEFT * np.sin(spread) + DOWN * np.cos(spread))
    arm = sk.vary(0.35)
    _paired_limbs(
        sk,
        "arm",
        chest,
        sk.tail(chest),
        LEFT * sk.vary(0.18) + DOWN * 0.03,
        np.stack([arm_direction] * 3),
        np.array([arm, sk.vary(0.9) * arm, sk.vary(0.25) * arm]),
    )
    if sk.rng.random() < 0.3:
        sk.chain("tail", pelvis, sk.head(pelvis), _unit(BACK + DOWN), [sk.vary(0.2)] * 3, 0.3)


def _quadruped(sk: _Skeleton) -> None:
    leg = sk.vary(0.7)
    body = sk.vary(1.0)
    segments = int(sk.rng.integers(2, 5))
    hips = np.array([0.0, body / 2, leg])
    spine = sk.chain("spine", -1, hips, FORWARD, [body / segments] * segments, 0.1)
    chest = spine[-1]
    neck = sk.chain(
        "neck",
        chest,
        sk.tail(chest),
        _unit(FORWARD + UP * sk.rng.uniform(0.3, 1.5)),
        [sk.vary(0.4) / 2] * int(sk.rng.integers(1, 4)),
        0.15,
    )
    sk.chain("head", neck[-1], sk.tail(neck[-1]), _unit(FORWARD + DOWN * 0.4), [sk.vary(0.25)])
    tail_bones = int(sk.rng.integers(0, 6))
    if tail_bones:
        sk.chain(
            "tail", spine[0], hips, _unit(BACK + DOWN * 0.5), [sk.vary(0.15)] * tail_bones, 0.3
        )
    lengths = np.array([0.4, 0.4, 0.2]) * leg * np.array([sk.vary(1), sk.vary(1), sk.vary(1)])
    zigzag = np.stack([_unit(DOWN + FORWARD * 0.3), _unit(DOWN + BACK * 0.4), DOWN])
    width = LEFT * sk.vary(0.15)
    _paired_limbs(sk, "hind_leg", spine[0], hips, width, zigzag, lengths)
    _paired_limbs(sk, "fore_leg", chest, sk.tail(chest), width, zigzag[[1, 0, 2]], lengths)


def _bird(sk: _Skeleton) -> None:
    leg = sk.vary(0.45)
    body = sk.chain(
        "body", -1, [0, sk.vary(0.2), leg], _unit(FORWARD + UP * 0.5), [sk.vary(0.25)] * 2
    )
    neck = sk.chain(
        "neck", body[-1], sk.tail(body[-1]), UP, [sk.vary(0.1)] * int(sk.rng.integers(2, 5)), 0.3
    )
    sk.chain("head", neck[-1], sk.tail(neck[-1]), FORWARD, [sk.vary(0.12), sk.vary(0.08)])
    droop = float(sk.rng.uniform(-0.3, 0.6))
    wing = _unit(LEFT + DOWN * droop + BACK * 0.2)
    wing_span = sk.vary(0.35)
    _paired_limbs(
        sk,
        "wing",
        body[-1],
        sk.head(body[-1]),
        LEFT * 0.06 + UP * 0.04,
        np.stack([wing] * 3),
        np.array([wing_span, sk.vary(wing_span), sk.vary(0.7 * wing_span)]),
    )
    _paired_limbs(
        sk,
        "leg",
        body[0],
        sk.head(body[0]),
        LEFT * 0.06,
        np.stack([_unit(DOWN + FORWARD * 0.3), _unit(DOWN + BACK * 0.3), FORWARD]),
        np.array([0.45, 0.45, 0.15]) * leg,
    )
    sk.chain("tail", body[0], sk.head(body[0]), _unit(BACK + DOWN * 0.2), [sk.vary(0.15)] * 2)


def _many_legged(sk: _Skeleton) -> None:
    height = sk.vary(0.3)
    segments = int(sk.rng.integers(2, 5))
    body = sk.chain(
        "body",
        -1,
        [0, segments * 0.15, height],
        FORWARD,
        [sk.vary(0.3)] * segments,
        0.05,
    )
    pairs = int(sk.rng.integers(3, 6))
    leg_segments = int(sk.rng.integers(2, 5))
    # A spider's leg rises to a knee above the body, then falls to reach the ground.
    rise = np.array([_unit(LEFT + UP * 0.8)] + [_unit(LEFT + DOWN * 1.2)] * (leg_segments - 1))
    lengths = np.full(leg_segments, sk.vary(0.2))
    knee_height = height + rise[0, 2] * lengths[0]
    lengths[1:] = knee_height / (-rise[1, 2] * (leg_segments - 1))
    for pair in range(pairs):
        segment = body[pair * segments // pairs]
        sweep = FORWARD * (pair - (pairs - 1) / 2) * 0.4
        _paired_limbs(
            sk,
            f"leg{pair}",
            segment,
            sk.head(segment),
            LEFT * sk.vary(0.08),
            rise + sweep,
            lengths * np.array([sk.vary(1) for _ in range(leg_segments)]),
        )
    if sk.rng.random() < 0.6:
        head = body[-1]
        _paired_limbs(
            sk,
            "antenna",
            head,
            sk.tail(head),
            LEFT * 0.03,
            np.stack([_unit(FORWARD + UP + LEFT * 0.5)] * 2),
            np.array([sk.vary(0.2)] * 2),
        )


def _snake(sk: _Skeleton) -> None:
    count = int(sk.rng.integers(8, 21))
    length = sk.vary(2.5)
    raised = int(sk.rng.integers(0, 4))  # a cobra lifts its front bones off the ground
    phase = sk.rng.uniform(0, 2 * np.pi)
    wave = sk.rng.uniform(0.3, 1.0)
    t = np.linspace(0.0, 1.0, count)
    directions = np.stack(
        [wave * np.sin(2 * np.pi * 1.5 * t + phase), -np.ones(count), np.zeros(count)], axis=1
    )
    directions[count - raised :, 2] = 1.5
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    sk.chain("body", -1, [0, length / 2, 0], directions, np.full(count, length / count))


def _tentacles(sk: _Skeleton) -> None:
    height = sk.vary(1.2)
    mantle = sk.chain(
        "mantle", -1, [0, 0, height], UP, [sk.vary(0.25)] * int(sk.rng.integers(1, 3))
    )
    arms = int(sk.rng.integers(3, 9))
    bones_per_arm = int(sk.rng.integers(4, 9))
    arm_length = sk.vary(1.1 * height)
    angles = np.linspace(0, 2 * np.pi, arms, endpoint=False) + sk.rng.uniform(0, np.pi)
    droop = sk.rng.uniform(0.5, 2.0)
    for i, angle in enumerate(angles):
        outward = np.array([np.cos(angle), np.sin(angle), -droop])
        sk.chain(
            f"tentacle{i}",
            mantle[0],
            sk.head(mantle[0]),
            _unit(outward),
            np.full(bones_per_arm, arm_length / bones_per_arm)
            * np.geomspace(1.3, 0.7, bones_per_arm),
            curl=0.35,
        )


def _tree(sk: _Skeleton) -> None:
    depth_limit = int(sk.rng.integers(2, 6))
    root = sk.bone("trunk", [0, 0, 0], [0, 0, sk.vary(0.6)], -1)
    pending = [(root, 1)]
    while pending and len(sk.bones) < MAX_TREE_BONES:
        parent, depth = pending.pop(0)
        if depth >= depth_limit:
            continue
        direction = _unit(sk.tail(parent) - sk.head(parent))
        length = np.linalg.norm(sk.tail(parent) - sk.head(parent)) * sk.rng.uniform(0.6, 0.95)
        for _ in range(int(sk.rng.integers(1, 4))):
            if len(sk.bones) >= MAX_TREE_BONES:
                break
            branch = _unit(direction + sk.rng.normal(0.0, 0.7, 3))
            child = sk.bone(
                f"branch{len(sk.bones):02d}",
                sk.tail(parent),
                sk.tail(parent) + length * branch,
                parent,
            )
            pending.append((child, depth + 1))


_GENERATORS: dict[str, Callable[[_Skeleton], None]] = {
    "biped": _biped,
    "quadruped": _quadruped,
    "bird": _bird,
    "many_legged": _many_legged,
    "snake": _snake,
    "tentacles": _tentacles,
    "tree": _tree,
}


def generate_bones(kind: str, rng: np.random.Generator) -> list[BoneSpec]:
    """Bone specs of a random creature of body plan ``kind``, scaled to about 1-3 units and
    standing on the ground (lowest point at z = 0)."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown topology {kind!r}; choose one of {', '.join(TOPOLOGY_KINDS)}")
    sk = _Skeleton(rng)
    _GENERATORS[kind](sk)
    points = np.array([[b.head, b.tail] for b in sk.bones]).reshape(-1, 3)
    size = float(np.ptp(points, axis=0).max())
    scale = float(rng.uniform(1.0, 3.0)) / size
    lift = np.array([0.0, 0.0, points[:, 2].min()])
    return [
        BoneSpec(b.name, (b.head - lift) * scale, (b.tail - lift) * scale, b.parent)
        for b in sk.bones
    ]


def build_armature(
    collection: bpy.types.Collection, name: str, bones: list[BoneSpec]
) -> bpy.types.Object:
    """An armature object from bone specs, linked into ``collection``.

    Edit bones exist only in Edit Mode, so the object is made active in the window's view layer
    (which must show ``collection``) for the build and left in Object Mode.
    """
    armature = bpy.data.armatures.new(name)
    armature_obj = bpy.data.objects.new(name, armature)
    collection.objects.link(armature_obj)
    view_layer = bpy.context.view_layer
    view_layer.objects.active = armature_obj
    bpy.ops.object.mode_set(mode="EDIT")
    edit_bones = [armature.edit_bones.new(spec.name) for spec in bones]
    for edit_bone, spec in zip(edit_bones, bones, strict=True):
        edit_bone.head = spec.head
        edit_bone.tail = spec.tail
        if spec.parent >= 0:
            edit_bone.parent = edit_bones[spec.parent]
            edit_bone.use_connect = bool(np.allclose(spec.head, bones[spec.parent].tail))
    bpy.ops.object.mode_set(mode="OBJECT")
    return armature_obj


def random_rig(
    collection: bpy.types.Collection, rng: np.random.Generator, kind: str | None = None
) -> tuple[bpy.types.Object, str]:
    """A random creature's armature (of ``kind``, or a random body plan) and its kind."""
    kind = kind or TOPOLOGY_KINDS[int(rng.integers(len(TOPOLOGY_KINDS)))]
    return build_armature(collection, f"synthetic_{kind}", generate_bones(kind, rng)), kind
