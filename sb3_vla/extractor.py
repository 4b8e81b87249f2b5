"""A features extractor for SB3's ``MultiInputPolicy`` with one encoder per observation key."""

from __future__ import annotations

from collections.abc import Sequence

import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import (
    get_flattened_obs_dim,
    is_image_space,
    is_image_space_channels_first,
)
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_vla.core.keys import EMBEDDING_KEY


def _mlp(in_dim: int, net_arch: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = [nn.Flatten()]
    for size in net_arch:
        layers += [nn.Linear(in_dim, int(size)), activation()]
        in_dim = int(size)
    return nn.Sequential(*layers), in_dim


class ImageEncoder(nn.Module):
    """A small CNN for uint8 images (SB3 has already scaled them to [0, 1]); HWC input is transposed.

    :param space: the image's Box space, ``(C, H, W)`` or ``(H, W, C)``.
    :param output_dim: size of the output features.
    """

    def __init__(self, space: spaces.Box, output_dim: int = 128) -> None:
        super().__init__()
        self.channels_first = is_image_space_channels_first(space)
        c = space.shape[0] if self.channels_first else space.shape[-1]
        h, w = space.shape[1:] if self.channels_first else space.shape[:2]
        # Nature-CNN strides for >= 64 px; gentler ones for small images so the feature map stays non-empty
        k, st = ((8, 4), (4, 2)) if min(h, w) >= 64 else ((3, 2), (3, 2))
        self.cnn = nn.Sequential(
            nn.Conv2d(c, 32, kernel_size=k[0], stride=k[1]),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=st[0], stride=st[1]),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            sample = th.zeros(1, *space.shape)
            n_flat = self.cnn(self._chw(sample)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, output_dim), nn.ReLU())

    def _chw(self, x: th.Tensor) -> th.Tensor:
        return x if self.channels_first else x.permute(0, 3, 1, 2)

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(self._chw(x.float())))


class PointNetEncoder(nn.Module):
    """PointNet-style encoder for point clouds ``(N, C)``: a shared per-point MLP, then a max-pool over points.

    :param point_dim: coordinates per point (3 for xyz).
    :param hidden_dims: sizes of the shared per-point MLP.
    :param output_dim: size of the output features.
    """

    def __init__(self, point_dim: int = 3, hidden_dims: Sequence[int] = (64, 128), output_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = point_dim
        for size in hidden_dims:
            layers += [nn.Linear(d, int(size)), nn.ReLU()]
            d = int(size)
        self.point_mlp = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(d, output_dim), nn.ReLU())

    def forward(self, points: th.Tensor) -> th.Tensor:
        return self.head(self.point_mlp(points.float()).max(dim=1).values)


class EmbeddingEncoder(nn.Module):
    """LayerNorm + linear projection for a frozen model's embedding (its scale is arbitrary, hence the norm).

    :param input_dim: size of the embedding.
    :param output_dim: size of the output features.
    """

    def __init__(self, input_dim: int, output_dim: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(input_dim), nn.Linear(input_dim, output_dim), nn.ReLU())

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.net(x.float())


def classify_key(
    key: str,
    space: spaces.Space,
    pointcloud_keys: Sequence[str] | None = None,
    embedding_keys: Sequence[str] = (EMBEDDING_KEY,),
    normalized_image: bool = False,
) -> str:
    """Which encoder a key gets: ``"image"``, ``"pointcloud"``, ``"embedding"`` or ``"vector"``.

    Point clouds are Box ``(N, 3)`` (or ``(N, 6)`` with colour/normals) with ``N >= 16``, unless
    ``pointcloud_keys`` names them explicitly.
    """
    if key in embedding_keys:
        return "embedding"
    shape = space.shape or ()
    if is_image_space(space, check_channels=False, normalized_image=normalized_image) and len(shape) == 3:
        return "image"
    if pointcloud_keys is not None:
        return "pointcloud" if key in pointcloud_keys else "vector"
    if isinstance(space, spaces.Box) and len(shape) == 2 and shape[1] in (3, 6) and shape[0] >= 16:
        return "pointcloud"
    return "vector"


class VLAFeaturesExtractor(BaseFeaturesExtractor):
    """One encoder per observation key, outputs concatenated (SB3's ``CombinedExtractor`` idea, VLA-aware).

    - images (uint8, HWC or CHW): a small CNN -> ``cnn_output_dim``
    - point clouds ``(N, 3)``: shared MLP + max-pool -> ``pointnet_output_dim``
    - ``vla_embedding``: LayerNorm + projection -> ``embedding_output_dim``
    - everything else (``vla_action``, proprioception, keypoints, one-hots): flatten + MLP ``mlp_net_arch``

    :param observation_space: the Dict observation space.
    :param mlp_net_arch: hidden sizes of the per-key vector MLPs (empty: flatten only).
    :param cnn_output_dim: image feature size.
    :param pointnet_dims: shared per-point MLP sizes.
    :param pointnet_output_dim: point cloud feature size.
    :param embedding_output_dim: embedding feature size.
    :param pointcloud_keys: keys to treat as point clouds (default: detected from shapes).
    :param embedding_keys: keys to treat as frozen-model embeddings.
    :param exclude_keys: keys the policy ignores (e.g. to train without ``vla_embedding``; an embedding key the
        observation lacks is fine, other missing keys are an error).
    :param normalized_image: images are already float in [0, 1] (SB3's ``normalize_images=False`` case).

    Example::

        >>> import numpy as np
        >>> space = spaces.Dict({
        ...     "rgb": spaces.Box(0, 255, (64, 64, 3), np.uint8),
        ...     "vla_action": spaces.Box(-1.0, 1.0, (7,)),
        ...     "vla_embedding": spaces.Box(-np.inf, np.inf, (32,)),
        ... })
        >>> extractor = VLAFeaturesExtractor(space, cnn_output_dim=64)
        >>> extractor.kinds
        {'rgb': 'image', 'vla_action': 'vector', 'vla_embedding': 'embedding'}
        >>> extractor.features_dim  # 64 (CNN) + 64 (MLP) + 64 (embedding projection)
        192
        >>> obs = {k: th.as_tensor(np.stack([s.sample() for _ in range(2)])).float() for k, s in space.items()}
        >>> extractor(obs).shape
        torch.Size([2, 192])

        In SB3, name it in ``policy_kwargs``:

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> model = SAC("MultiInputPolicy", make_residual_env("Pendulum-v1", base="zero"), buffer_size=1000,
        ...             policy_kwargs=dict(features_extractor_class=VLAFeaturesExtractor,
        ...                                features_extractor_kwargs=dict(mlp_net_arch=[32])))
        >>> model.actor.features_extractor.kinds
        {'obs': 'vector', 'vla_action': 'vector'}
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        mlp_net_arch: Sequence[int] = (64,),
        cnn_output_dim: int = 128,
        pointnet_dims: Sequence[int] = (64, 128),
        pointnet_output_dim: int = 128,
        embedding_output_dim: int = 64,
        pointcloud_keys: Sequence[str] | None = None,
        embedding_keys: Sequence[str] = (EMBEDDING_KEY,),
        exclude_keys: Sequence[str] = (),
        normalized_image: bool = False,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(
                f"VLAFeaturesExtractor needs a Dict observation space (use MultiInputPolicy), got {observation_space}"
            )
        # a base without an embedding adds no vla_embedding: excluding it is then a no-op, so one config serves
        # both kinds of base; any other missing key is a typo
        unknown = [k for k in exclude_keys if k not in observation_space.spaces and k not in embedding_keys]
        if unknown:
            raise ValueError(f"exclude_keys {unknown} are not observation keys: {sorted(observation_space.spaces)}")
        super().__init__(observation_space, features_dim=1)
        encoders: dict[str, nn.Module] = {}
        self.kinds: dict[str, str] = {}
        total = 0
        for key, space in observation_space.spaces.items():
            if key in exclude_keys:
                continue
            kind = classify_key(key, space, pointcloud_keys, embedding_keys, normalized_image)
            self.kinds[key] = kind
            if kind == "image":
                assert isinstance(space, spaces.Box)
                encoders[key] = ImageEncoder(space, cnn_output_dim)
                total += cnn_output_dim
            elif kind == "pointcloud":
                shape = space.shape or ()
                if len(shape) != 2:
                    raise ValueError(f"point cloud key {key!r} must have shape (N, C), got {space.shape}")
                encoders[key] = PointNetEncoder(shape[1], pointnet_dims, pointnet_output_dim)
                total += pointnet_output_dim
            elif kind == "embedding":
                encoders[key] = EmbeddingEncoder(get_flattened_obs_dim(space), embedding_output_dim)
                total += embedding_output_dim
            else:
                encoders[key], out = _mlp(get_flattened_obs_dim(space), mlp_net_arch)
                total += out
        if not encoders:
            raise ValueError("VLAFeaturesExtractor has no observation key left to encode (all excluded?)")
        self.extractors = nn.ModuleDict(encoders)
        self._features_dim = total

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        return th.cat([enc(observations[key]) for key, enc in self.extractors.items()], dim=1)
