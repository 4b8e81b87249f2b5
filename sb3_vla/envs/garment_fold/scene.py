"""MJCF generation for GarmentFold: a T-shirt flex on a table, two 6-joint arms with 24-joint hands.

Everything is generated in Python so the cloth resolution is a parameter. The shirt is a ``flexcomp
type="direct"`` built on a regular grid (body rectangle plus two sleeves), lying flat in the shirt frame
(x to the shirt's left sleeve at -x, y from bottom hem to collar). The robot links have no collision geometry:
cloth is grasped by runtime ``connect`` equality constraints (see :mod:`sb3_vla.envs.garment_fold.env`).

Physics settings follow the measured design note: MuJoCo >= 4.0, ``discrete`` integrator, CG solver,
10 ms timestep, plane table with ``condim=3``, cloth self-collision on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ARM_JOINTS = ("j1", "j2", "j3", "j4", "j5", "j6")
# Shadow-like hand: wrist 2, first/middle/ring fingers 4 each, little finger 5, thumb 5 = 24 joints.
HAND_JOINTS = (
    "wr1",
    "wr2",
    "ff_abd",
    "ff_mcp",
    "ff_pip",
    "ff_dip",
    "mf_abd",
    "mf_mcp",
    "mf_pip",
    "mf_dip",
    "rf_abd",
    "rf_mcp",
    "rf_pip",
    "rf_dip",
    "lf_meta",
    "lf_abd",
    "lf_mcp",
    "lf_pip",
    "lf_dip",
    "th_rot",
    "th_abd",
    "th_prox",
    "th_mid",
    "th_dist",
)
SIDES = ("L", "R")
JOINTS_PER_SIDE = len(ARM_JOINTS) + len(HAND_JOINTS)  # 30

# Joint ranges in radians (compiler angle="radian").
ARM_RANGES = {
    "j1": (-1.7, 1.7),
    "j2": (-1.2, 1.6),
    "j3": (-0.3, 2.7),
    "j4": (-1.7, 1.7),
    "j5": (-2.0, 2.0),
    "j6": (-1.7, 1.7),
}
HAND_RANGES = {
    "wr1": (-0.6, 0.6),
    "wr2": (-0.4, 0.4),
    "th_rot": (-1.2, 1.2),
    "th_abd": (-1.2, 0.8),
    "th_prox": (-0.4, 1.4),
    "th_mid": (-0.6, 0.8),
    "th_dist": (-0.2, 1.4),
    "lf_meta": (0.0, 0.7),
}
FINGER_RANGES = {"abd": (-0.35, 0.35), "mcp": (-0.2, 1.6), "pip": (0.0, 1.7), "dip": (0.0, 1.4)}

# Hand postures (unprefixed joint -> radians). PINCH brings the thumb tip onto the first-finger tip; it was solved
# numerically (damped least squares on the thumb joints) and PINCH_POINT is where the tips meet, in the palm frame.
OPEN_POSTURE = {"th_abd": -0.35, "th_prox": 0.15, "th_rot": -0.15}
PINCH_POSTURE = {
    "ff_mcp": 0.8,
    "ff_pip": 0.7,
    "ff_dip": 0.5,
    "mf_mcp": 1.3,
    "mf_pip": 1.4,
    "mf_dip": 1.0,
    "rf_mcp": 1.3,
    "rf_pip": 1.4,
    "rf_dip": 1.0,
    "lf_meta": 0.4,
    "lf_mcp": 1.3,
    "lf_pip": 1.4,
    "lf_dip": 1.0,
    "th_rot": -0.297,
    "th_abd": -0.675,
    "th_prox": 1.06,
    "th_mid": 0.468,
    "th_dist": 1.155,
}
PINCH_POINT = (0.027, -0.0792, 0.1141)


def joint_names(side: str) -> list[str]:
    """The 30 actuated joint names of one side in action order: 6 arm joints then 24 hand joints."""
    return [f"{side}_{j}" for j in ARM_JOINTS + HAND_JOINTS]


def joint_range(name: str) -> tuple[float, float]:
    """Range (radians) of an actuated joint given its unprefixed name (``"j3"``, ``"ff_pip"``)."""
    if name in ARM_RANGES:
        return ARM_RANGES[name]
    if name in HAND_RANGES:
        return HAND_RANGES[name]
    return FINGER_RANGES[name.split("_")[1]]


@dataclass
class ShirtMesh:
    """A flat T-shirt triangle mesh in the shirt frame (metres), with named keypoint vertices.

    :param points: ``(N, 3)`` vertex positions with z = 0.
    :param triangles: ``(T, 3)`` vertex ids.
    :param keypoints: name -> vertex id for the 8 keypoints, in :data:`KEYPOINT_NAMES` order.
    :param body_half_width: x half-width of the body rectangle.
    """

    points: np.ndarray
    triangles: np.ndarray
    keypoints: dict[str, int] = field(default_factory=dict)
    body_half_width: float = 0.2


KEYPOINT_NAMES = (
    "left_sleeve_tip",
    "right_sleeve_tip",
    "left_armpit",
    "right_armpit",
    "bottom_left",
    "bottom_right",
    "collar",
    "bottom_centre",
)


def make_shirt(
    spacing: float = 1.0 / 30.0,
    body_width: float = 0.4,
    body_height: float = 0.4,
    sleeve_length: float = 0.1333,
    sleeve_height: float = 0.1667,
) -> ShirtMesh:
    """Build the flat T-shirt mesh on a square grid of ``spacing`` metres.

    The default (3.33 cm) gives 217 vertices and 360 triangles. The body is centred on the origin; the
    sleeves stick out at -x (left) and +x (right) along the top ``sleeve_height`` of the body. The body has an odd
    number of rows and columns so every fold line (the body's mid row and its side columns) runs through vertices:
    a fold line between two vertex rows leaves a whole mesh edge in the crease and a spacing-sized fold error.

    Example::

        >>> make_shirt().points.shape
        (217, 3)
        >>> make_shirt(spacing=0.05).points.shape  # coarser, faster cloth
        (105, 3)
    """
    if spacing <= 0.0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    nbx = 2 * int(round(body_width / spacing / 2.0)) + 1  # body columns (odd)
    nby = 2 * int(round(body_height / spacing / 2.0)) + 1  # body rows (odd)
    nsx = max(1, int(round(sleeve_length / spacing)))  # sleeve columns beyond the body
    nsy = max(2, int(round(sleeve_height / spacing)) + 1)  # sleeve rows (top rows of the body)
    half = (nbx - 1) // 2
    ids: dict[tuple[int, int], int] = {}
    pts: list[tuple[float, float, float]] = []
    x0 = -(nbx - 1) * spacing / 2.0
    y0 = -(nby - 1) * spacing / 2.0
    for j in range(nby):
        for i in range(-nsx, nbx + nsx):
            in_body = 0 <= i < nbx
            in_sleeve = j >= nby - nsy
            if in_body or in_sleeve:
                ids[(i, j)] = len(pts)
                pts.append((x0 + i * spacing, y0 + j * spacing, 0.0))
    tris: list[tuple[int, int, int]] = []
    for (i, j), a in ids.items():
        b, c, d = ids.get((i + 1, j)), ids.get((i, j + 1)), ids.get((i + 1, j + 1))
        if b is None or c is None or d is None:
            continue
        # Alternate the diagonal so the cloth has no preferred shear direction.
        if (i + j) % 2 == 0:
            tris += [(a, b, d), (a, d, c)]
        else:
            tris += [(a, b, c), (b, d, c)]
    top = nby - 1
    mid_sleeve = nby - 1 - (nsy - 1) // 2
    keypoints = {
        "left_sleeve_tip": ids[(-nsx, mid_sleeve)],
        "right_sleeve_tip": ids[(nbx - 1 + nsx, mid_sleeve)],
        "left_armpit": ids[(0, nby - nsy)],
        "right_armpit": ids[(nbx - 1, nby - nsy)],
        "bottom_left": ids[(0, 0)],
        "bottom_right": ids[(nbx - 1, 0)],
        "collar": ids[(half, top)],
        "bottom_centre": ids[(half, 0)],
    }
    return ShirtMesh(
        points=np.asarray(pts, dtype=np.float64),
        triangles=np.asarray(tris, dtype=np.int64),
        keypoints=keypoints,
        body_half_width=(nbx - 1) * spacing / 2.0,
    )


def _f(v: np.ndarray | list[float] | tuple[float, ...]) -> str:
    return " ".join(f"{float(x):.6g}" for x in v)


def _finger(side: str, name: str, x: float, lengths: tuple[float, float, float], meta: bool = False) -> str:
    """One finger pointing along the hand's +z; flexion about +x bends it toward the palm side (-y)."""
    p = f"{side}_{name}"
    l1, l2, l3 = lengths
    meta_open = ""
    meta_close = ""
    if meta:
        meta_open = (
            f'<body name="{p}_meta" pos="{x} 0 0.055"><joint name="{side}_lf_meta" axis="0 0.3 1" class="hand"/>'
            f'<geom type="capsule" fromto="0 0 0 0 0 0.035" size="0.009" class="vis"/>'
        )
        meta_close = "</body>"
        pos = "0 0 0.035"
    else:
        pos = f"{x} 0 0.09"
    return (
        f"{meta_open}"
        f'<body name="{p}_prox" pos="{pos}">'
        f'<joint name="{p}_abd" axis="0 1 0" class="hand"/><joint name="{p}_mcp" axis="1 0 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 {l1}" size="0.0085" class="vis"/>'
        f'<body name="{p}_mid" pos="0 0 {l1}"><joint name="{p}_pip" axis="1 0 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 {l2}" size="0.008" class="vis"/>'
        f'<body name="{p}_dist" pos="0 0 {l2}"><joint name="{p}_dip" axis="1 0 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 {l3}" size="0.0075" class="vis"/>'
        f'<site name="{p}_tip" pos="0 0 {l3}" size="0.004" group="4"/>'
        f"</body></body></body>{meta_close}"
    )


def hand_xml(side: str) -> str:
    """A 24-joint Shadow-like hand in its own frame: fingers along +z, palm facing -y, thumb at +x."""
    ps = PINCH_POINT
    thumb_dir = np.array([0.55, 0.0, 0.83])
    thumb_dir /= np.linalg.norm(thumb_dir)
    thumb = (
        f'<body name="{side}_th_base" pos="0.032 -0.014 0.04" zaxis="{_f(thumb_dir)}">'
        f'<joint name="{side}_th_rot" axis="0 0 1" class="hand"/>'
        f'<joint name="{side}_th_abd" axis="0 1 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 0.045" size="0.011" class="vis"/>'
        f'<body name="{side}_th_prox_b" pos="0 0 0.045"><joint name="{side}_th_prox" axis="1 0 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 0.038" size="0.0095" class="vis"/>'
        f'<body name="{side}_th_mid_b" pos="0 0 0.038"><joint name="{side}_th_mid" axis="0 1 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 0.03" size="0.009" class="vis"/>'
        f'<body name="{side}_th_dist_b" pos="0 0 0.03"><joint name="{side}_th_dist" axis="1 0 0" class="hand"/>'
        f'<geom type="capsule" fromto="0 0 0 0 0 0.025" size="0.008" class="vis"/>'
        f'<site name="{side}_th_tip" pos="0 0 0.025" size="0.004" group="4"/>'
        f"</body></body></body></body>"
    )
    fingers = (
        _finger(side, "ff", 0.027, (0.045, 0.027, 0.022))
        + _finger(side, "mf", 0.009, (0.048, 0.029, 0.023))
        + _finger(side, "rf", -0.009, (0.045, 0.027, 0.022))
        + _finger(side, "lf", -0.027, (0.038, 0.022, 0.02), meta=True)
    )
    return (
        f'<body name="{side}_wrist" pos="0 0 0.02">'
        f'<joint name="{side}_wr1" axis="1 0 0" class="wrist"/>'
        f'<geom type="capsule" fromto="0 0 -0.02 0 0 0.01" size="0.022" class="vis"/>'
        f'<body name="{side}_palm" pos="0 0 0.015"><joint name="{side}_wr2" axis="0 1 0" class="wrist"/>'
        f'<geom type="box" size="0.042 0.012 0.045" pos="0 0 0.045" class="vis" rgba="0.85 0.7 0.6 1"/>'
        f'<site name="{side}_pinch" pos="{_f(ps)}" size="0.006" rgba="1 0 0 0.6" group="4"/>'
        f"{thumb}{fingers}</body></body>"
    )


def arm_xml(side: str) -> str:
    """A 6-joint arm (yaw, shoulder, elbow, forearm roll, wrist pitch, flange roll) carrying a hand.

    The left arm stands at -x facing +x; the right one is its mirror (rotated 180 degrees about z).
    """
    base_x = -0.5 if side == "L" else 0.5
    yaw = "0 0 0" if side == "L" else "0 0 3.14159265"
    color = "0.35 0.45 0.75 1" if side == "L" else "0.75 0.4 0.35 1"
    return (
        f'<body name="{side}_base" pos="{base_x} 0 0" euler="{yaw}" gravcomp="1">'
        f'<geom type="cylinder" size="0.05 0.15" pos="0 0 0.15" class="vis" rgba="0.3 0.3 0.3 1"/>'
        f'<body name="{side}_l1" pos="0 0 0.3" gravcomp="1"><joint name="{side}_j1" axis="0 0 1" class="arm"/>'
        f'<geom type="cylinder" size="0.045 0.03" class="vis" rgba="{color}"/>'
        f'<body name="{side}_l2" pos="0 0 0.05" gravcomp="1"><joint name="{side}_j2" axis="0 1 0" class="arm"/>'
        f'<geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.035" class="vis" rgba="{color}"/>'
        f'<body name="{side}_l3" pos="0.3 0 0" gravcomp="1"><joint name="{side}_j3" axis="0 1 0" class="arm"/>'
        f'<geom type="capsule" fromto="0 0 0 0.16 0 0" size="0.03" class="vis" rgba="{color}"/>'
        f'<body name="{side}_l4" pos="0.16 0 0" gravcomp="1"><joint name="{side}_j4" axis="1 0 0" class="arm"/>'
        f'<geom type="capsule" fromto="0 0 0 0.12 0 0" size="0.027" class="vis" rgba="{color}"/>'
        f'<body name="{side}_l5" pos="0.12 0 0" gravcomp="1"><joint name="{side}_j5" axis="0 1 0" class="arm"/>'
        f'<geom type="sphere" size="0.03" class="vis" rgba="{color}"/>'
        f'<body name="{side}_l6" pos="0.03 0 0" gravcomp="1"><joint name="{side}_j6" axis="1 0 0" class="arm"/>'
        f'<geom type="cylinder" fromto="0 0 0 0.02 0 0" size="0.03" class="vis" rgba="0.2 0.2 0.2 1"/>'
        # the hand frame has its fingers along +z: rotate so they continue the flange's +x
        f'<body name="{side}_hand" pos="0.02 0 0" euler="0 1.5707963 0" gravcomp="1">'
        f"{hand_xml(side)}"
        f"</body></body></body></body></body></body></body></body>"
    )


@dataclass
class SceneConfig:
    """Physics and cloth settings of the generated scene (defaults from the design note).

    :param spacing: cloth grid spacing in metres (3.33 cm: 230 vertices).
    :param cloth_mass: total cloth mass in kg.
    :param young: Young's modulus of the cloth (Pa).
    :param self_collision: cloth self-collision (needed for layering, costs 2.5-4x).
    :param timestep: physics timestep in seconds.
    :param sleep: let the cloth fall asleep when at rest (MuJoCo sleeping islands); a grasp (an active equality to
        an awake arm) wakes it. Saves about a third of the physics time over a scripted episode.
    """

    spacing: float = 1.0 / 30.0
    cloth_mass: float = 0.13
    young: float = 1e5
    self_collision: bool = True
    timestep: float = 0.01
    sleep: bool = True


CLOTH_RADIUS = 0.004


def scene_xml(mesh: ShirtMesh | None, config: SceneConfig) -> str:
    """The full MJCF of the scene: table plane, shirt flex, two arms, 60 position actuators, grasp equalities.

    With ``mesh=None`` the cloth and the grasp equalities are left out: the arms-only model the scripted
    controller uses for inverse kinematics.
    """
    selfcollide = "auto" if config.self_collision else "none"
    acts = []
    for side in SIDES:
        for j in ARM_JOINTS:
            lo, hi = joint_range(j)
            acts.append(
                f'<position name="{side}_{j}" joint="{side}_{j}" kp="800" dampratio="1" ctrlrange="{lo} {hi}"/>'
            )
        for j in HAND_JOINTS:
            lo, hi = joint_range(j)
            kp = 60 if j.startswith("wr") else 20
            acts.append(
                f'<position name="{side}_{j}" joint="{side}_{j}" kp="{kp}" dampratio="1" ctrlrange="{lo} {hi}"/>'
            )
    eqs = []
    cloth = ""
    if mesh is not None:
        # One inactive connect per hand per vertex: activating one at runtime is the grasp (costs nothing idle).
        for side in SIDES:
            for v in range(len(mesh.points)):
                eqs.append(
                    f'<connect name="{side}_grab_{v}" body1="{side}_palm" body2="cloth_{v}" anchor="0 0 0" '
                    f'active="false" solref="0.03 1"/>'
                )
        pts = mesh.points.copy()
        pts[:, 2] = CLOTH_RADIUS
        cloth = f"""<flexcomp name="cloth" type="direct" dim="2" radius="{CLOTH_RADIUS}" mass="{config.cloth_mass}"
              material="cloth" point="{_f(pts.reshape(-1))}" element="{" ".join(map(str, mesh.triangles.reshape(-1)))}">
      <contact selfcollide="{selfcollide}" condim="1" friction="0.8" solref="0.01 1"/>
      <elasticity young="{config.young}" poisson="0.2" thickness="1e-3" elastic2d="both" damping="1e-3"/>
    </flexcomp>"""
    xml = f"""<mujoco model="garment_fold">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{config.timestep}" integrator="discrete" solver="CG" tolerance="1e-6" sleep_tolerance="1e-3">
    <flag sleep="{"enable" if config.sleep else "disable"}"/>
  </option>
  <size memory="64M"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="8" numstacks="4" numquads="1"/>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.4 0.4 0.4" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.45 0.35" rgb2="0.5 0.4 0.3" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="4 4" reflectance="0"/>
    <material name="cloth" rgba="0.2 0.55 0.85 1"/>
  </asset>
  <default>
    <default class="vis"><geom contype="0" conaffinity="0" density="600" rgba="0.85 0.7 0.6 1"/></default>
    <default class="arm"><joint armature="0.05" damping="1" limited="true"/></default>
    <default class="wrist"><joint armature="0.005" damping="0.1" limited="true"/></default>
    <default class="hand"><joint armature="0.002" damping="0.02" limited="true"/></default>
  </default>
  <worldbody>
    <light name="top" pos="0 -0.3 1.5" dir="0 0.2 -1" castshadow="false" diffuse="0.6 0.6 0.6"/>
    <geom name="table" type="plane" size="1 1 0.02" material="table" condim="3" friction="0.8"/>
    <camera name="front" pos="0 -0.72 0.74" xyaxes="1 0 0 0 0.7 0.714"/>
    <camera name="top" pos="0 -0.05 1.05" xyaxes="1 0 0 0 1 0"/>
    {cloth}
    {arm_xml("L")}
    {arm_xml("R")}
  </worldbody>
  <actuator>
    {"".join(acts)}
  </actuator>
  {"<equality>" + "".join(eqs) + "</equality>" if eqs else ""}
</mujoco>"""
    return _apply_ranges(xml)


def _apply_ranges(xml: str) -> str:
    """Insert each actuated joint's range attribute (kept in one table above, not in the templates)."""
    for side in SIDES:
        for j in ARM_JOINTS + HAND_JOINTS:
            lo, hi = joint_range(j)
            xml = xml.replace(f'<joint name="{side}_{j}" ', f'<joint name="{side}_{j}" range="{lo} {hi}" ', 1)
    return xml
