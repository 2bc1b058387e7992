"""Any armature as a skeleton graph: joints, bones between them, and a body part per bone.

The graph is what the model sees, so it keeps the bones that move the character (for a
generated Rigify rig its DEF bones, never its controls or mechanism bones) and joins bones that
meet at rest into one joint, so a limb is a chain rather than a row of loose sticks. Extraction
reads the armature only; it never writes to it, so linked (library) rigs work too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine.contract.shot import SkeletonGraph
from ..engine.contract.skeleton import segment_parts
from ..engine.errors import BadInput
from .blender_versions import hidden_bones

JOINT_MERGE_FRACTION = 1e-3
"""A child's head within this fraction of the shorter bone's length of its parent's tail (or
head) shares that joint: connected bones match exactly, rest poses saved in float32 nearly."""
ZERO_LENGTH_FRACTION = 1e-4
"""Bones shorter than this fraction of the rig's longest bone are dropped: they have no
direction, so they would draw as dots and skew part sizes."""
RIGIFY_DEFORM_PREFIX = "DEF-"
RIGIFY_ORIGINAL_PREFIX = "ORG-"


class SkeletonError(BadInput):
    """An armature (or bone filter) that gives no skeleton; the message says how to fix it."""


@dataclass(frozen=True)
class SkeletonOptions:
    """Which bones become the skeleton.

    ``deform_only``: only bones that deform meshes; ``None`` picks it per rig (on for a
    generated Rigify rig, whose controls and mechanism bones are not the body, off otherwise).
    ``bone_collections``: only bones in these collections (or their child collections);
    empty means all. ``include_hidden``: also bones hidden with their own hide flag. Collection
    visibility is ignored on purpose: Rigify keeps the DEF bones in a hidden collection.
    """

    deform_only: bool | None = None
    bone_collections: tuple[str, ...] = ()
    include_hidden: bool = False


@dataclass(frozen=True)
class ExtractedSkeleton:
    """The skeleton graph plus where each joint's position comes from in the pose.

    Joint j sits at the head (``joint_is_tail[j]`` false) or tail of pose bone
    ``joint_bone[j]`` (an index into the armature's pose bones, in order ``pose_bone_names``),
    that is ``joint_offset[j]`` (0, or the bone's rest length) along the bone's Y axis from its
    head, so the motion sampler gets all joints from one ``foreach_get`` of pose matrices.
    """

    graph: SkeletonGraph
    armature_name: str
    pose_bone_names: tuple[str, ...]
    joint_bone: np.ndarray
    joint_is_tail: np.ndarray
    joint_offset: np.ndarray
    rest_joints: np.ndarray
    """(J, 3) joint positions at rest, armature space."""
    bone_lengths: np.ndarray
    """(E,) rest length of each kept bone, the weights the parts were segmented with."""
    notes: tuple[str, ...] = field(default=())


def is_generated_rigify(armature_data) -> bool:
    """A rig made by Rigify's Generate: it carries a ``rig_id`` or DEF- bones (a metarig has
    neither), so its body is the DEF bones and the rest are controls and mechanism."""
    if "rig_id" in armature_data.keys():
        return True
    return any(bone.name.startswith(RIGIFY_DEFORM_PREFIX) for bone in armature_data.bones)


def _bone_arrays(bones, name: str, width: int, dtype) -> np.ndarray:
    values = np.empty(len(bones) * width, dtype=dtype)
    bones.foreach_get(name, values)
    return values.reshape(-1, width) if width > 1 else values


def _collection_members(armature_data, names: tuple[str, ...], armature_name: str) -> set[str]:
    """Bones in the named collections or in any collection nested below them."""
    collections = {c.name: c for c in armature_data.collections_all}
    missing = [name for name in names if name not in collections]
    if missing:
        available = ", ".join(sorted(collections)) or "none"
        raise SkeletonError(
            f"armature {armature_name!r} has no bone collection {', '.join(map(repr, missing))}; "
            f"its collections are: {available}. Fix bone_collections, or leave it empty to "
            "export all bones"
        )
    members: set[str] = set()
    pending = [collections[name] for name in names]
    while pending:
        collection = pending.pop()
        members.update(bone.name for bone in collection.bones)
        pending.extend(collection.children)
    return members


def _keep_mask(
    armature_obj,
    bone_names: tuple[str, ...],
    options: SkeletonOptions,
    lengths: np.ndarray,
    notes: list[str],
) -> np.ndarray:
    """Apply the filters one at a time, so an empty result names the option that emptied it."""
    data = armature_obj.data
    name = armature_obj.name

    zero = lengths <= ZERO_LENGTH_FRACTION * lengths.max()
    if zero.all():
        raise SkeletonError(f"armature {name!r} has only zero-length bones; give its bones length")
    if zero.any():
        dropped = [n for n, z in zip(bone_names, zero, strict=True) if z]
        notes.append(f"dropped {len(dropped)} zero-length bones: {', '.join(dropped)}")
    keep = ~zero

    deform_only = options.deform_only
    if deform_only is None:
        deform_only = is_generated_rigify(data)
        if deform_only:
            notes.append(
                "generated Rigify rig: exporting its deform (DEF) bones only; "
                "set deform_only=False to export controls and mechanism bones too"
            )
    if deform_only:
        keep &= _bone_arrays(data.bones, "use_deform", 1, bool)
        if not keep.any():
            raise SkeletonError(
                f"armature {name!r} has no deform bones; set deform_only=False "
                "(Deform Bones Only off) to export all bones"
            )

    if options.bone_collections:
        members = _collection_members(data, options.bone_collections, name)
        keep &= np.array([n in members for n in bone_names], dtype=bool)
        if not keep.any():
            raise SkeletonError(
                f"no exportable bones of armature {name!r} are in bone collections "
                f"{', '.join(options.bone_collections)}; change bone_collections "
                "(or leave it empty for all bones)"
            )

    if not options.include_hidden:
        hidden = hidden_bones(armature_obj)
        if (keep & hidden).any():
            notes.append(f"skipped {int((keep & hidden).sum())} hidden bones")
        keep &= ~hidden
        if not keep.any():
            raise SkeletonError(
                f"every bone of armature {name!r} left by the other filters is hidden; "
                "unhide bones, or include hidden ones (Include Hidden Bones in the PoseAnything "
                "panel, --include-hidden on the command line)"
            )
    return keep


def _stand_ins(bone_names: tuple[str, ...], keep: np.ndarray) -> np.ndarray:
    """The kept bone that stands for each bone: itself, or for a Rigify ORG bone its DEF twin.

    A generated Rigify rig hangs its DEF bones from ORG bones (DEF-thigh.L under ORG-spine),
    and DEF-x follows ORG-x, so reading ORG-x as DEF-x restores the body's hierarchy.
    """
    index = {name: i for i, name in enumerate(bone_names)}
    stand_in = np.where(keep, np.arange(len(bone_names)), -1)
    for i, name in enumerate(bone_names):
        if not keep[i] and name.startswith(RIGIFY_ORIGINAL_PREFIX):
            twin = index.get(RIGIFY_DEFORM_PREFIX + name.removeprefix(RIGIFY_ORIGINAL_PREFIX), -1)
            if twin >= 0 and keep[twin]:
                stand_in[i] = twin
    return stand_in


def _kept_parents(parents: np.ndarray, stand_in: np.ndarray) -> np.ndarray:
    """Nearest kept ancestor of each bone (-1 for none): filtered bones pass their children up."""
    kept_parent = np.full(len(parents), -1)
    for bone in range(len(parents)):
        ancestor = parents[bone]
        while ancestor >= 0 and stand_in[ancestor] in (-1, bone):
            ancestor = parents[ancestor]
        kept_parent[bone] = stand_in[ancestor] if ancestor >= 0 else -1
    return kept_parent


def _parents_first(kept_parent: np.ndarray, kept: np.ndarray) -> list[int]:
    """Kept bones depth first, each after its kept parent. A parent cycle (possible only
    through Rigify stand-ins in an odd rig) is cut by making its first bone a root."""
    children: dict[int, list[int]] = {int(bone): [] for bone in kept}
    for bone in kept:
        if kept_parent[bone] >= 0:
            children[int(kept_parent[bone])].append(int(bone))
    order: list[int] = []
    visited: set[int] = set()
    roots = [int(bone) for bone in kept if kept_parent[bone] < 0]
    for start in roots + [int(bone) for bone in kept]:
        if start in visited:
            continue
        kept_parent[start] = kept_parent[start] if start in roots else -1
        stack = [start]
        while stack:
            bone = stack.pop()
            visited.add(bone)
            order.append(bone)
            stack.extend(reversed(children[bone]))
    return order


def extract_skeleton(
    armature_obj, options: SkeletonOptions = SkeletonOptions()
) -> ExtractedSkeleton:
    """Build the skeleton graph of an armature object, reading its rest pose only.

    Each kept bone is an edge from its head joint to its tail joint. A bone whose head lies on
    its nearest kept ancestor's tail (or head) at rest shares that joint; its position then
    comes from the ancestor, which is exact for connected bones. Raises ``SkeletonError`` with the
    fix for non-armatures, armatures without bones and filters that leave nothing.
    """
    if armature_obj is None or armature_obj.type != "ARMATURE":
        kind = "nothing" if armature_obj is None else f"a {armature_obj.type.lower()} object"
        label = "" if armature_obj is None else f" {armature_obj.name!r}"
        raise SkeletonError(f"object{label} is {kind}, not an armature; pick an armature object")
    data = armature_obj.data
    if len(data.bones) == 0:
        raise SkeletonError(
            f"armature {armature_obj.name!r} has no bones; add bones or pick another armature"
        )

    if armature_obj.mode == "EDIT":
        armature_obj.update_from_editmode()  # edit bones reach Armature.bones only on sync
    bones = data.bones
    bone_names = tuple(bone.name for bone in bones)
    index = {bone_name: i for i, bone_name in enumerate(bone_names)}
    parents = np.array([index[b.parent.name] if b.parent else -1 for b in bones], dtype=np.int64)
    heads = _bone_arrays(bones, "head_local", 3, np.float64)
    tails = _bone_arrays(bones, "tail_local", 3, np.float64)
    lengths = _bone_arrays(bones, "length", 1, np.float64)  # what Blender places tails with

    notes: list[str] = []
    keep = _keep_mask(armature_obj, bone_names, options, lengths, notes)
    kept_parent = _kept_parents(parents, _stand_ins(bone_names, keep))
    kept = np.flatnonzero(keep)

    head_joint = np.full(len(bones), -1)
    tail_joint = np.full(len(bones), -1)
    joint_bone: list[int] = []
    joint_is_tail: list[bool] = []
    joint_names: list[str] = []

    def new_joint(bone: int, is_tail: bool) -> int:
        joint_bone.append(bone)
        joint_is_tail.append(is_tail)
        joint_names.append(f"{bone_names[bone]}:{'tail' if is_tail else 'head'}")
        return len(joint_bone) - 1

    for bone in _parents_first(kept_parent, kept):
        parent = kept_parent[bone]
        if parent >= 0:
            tolerance = JOINT_MERGE_FRACTION * min(lengths[bone], lengths[parent])
            if np.linalg.norm(heads[bone] - tails[parent]) <= tolerance:
                head_joint[bone] = tail_joint[parent]
            elif np.linalg.norm(heads[bone] - heads[parent]) <= tolerance:
                head_joint[bone] = head_joint[parent]
        if head_joint[bone] < 0:
            head_joint[bone] = new_joint(bone, False)
        tail_joint[bone] = new_joint(bone, True)

    edges = np.stack([head_joint[kept], tail_joint[kept]], axis=1).astype(np.int32)
    joint_bone_array = np.array(joint_bone, dtype=np.int64)
    joint_is_tail_array = np.array(joint_is_tail, dtype=bool)
    rest_joints = np.where(
        joint_is_tail_array[:, None], tails[joint_bone_array], heads[joint_bone_array]
    )
    kept_lengths = lengths[kept]
    graph = SkeletonGraph(
        joint_names=tuple(joint_names),
        bone_names=tuple(bone_names[b] for b in kept),
        edges=edges,
        edge_part=segment_parts(edges, len(joint_names), kept_lengths).astype(np.int8),
    )
    return ExtractedSkeleton(
        graph=graph,
        armature_name=armature_obj.name,
        pose_bone_names=bone_names,
        joint_bone=joint_bone_array,
        joint_is_tail=joint_is_tail_array,
        joint_offset=np.where(joint_is_tail_array, lengths[joint_bone_array], 0.0),
        rest_joints=rest_joints,
        bone_lengths=kept_lengths,
        notes=tuple(notes),
    )
