"""Import LIBERO non-interactively, with our robosuite compatibility layer and a chosen asset folder.

LIBERO reads ``$LIBERO_CONFIG_PATH/config.yaml`` (default ``~/.libero``) when ``libero.libero`` is first imported
and *prompts on stdin* when the file is missing (``EOFError`` in scripts, tests and subprocess envs). We never let
it prompt: unless the user already has a config (``$LIBERO_CONFIG_PATH/config.yaml`` or ``~/.libero/config.yaml``),
we write one pointing at the BDDL files and init states installed with the ``libero`` package into
``$SB3_VLA_CACHE/libero`` (default ``~/.cache/sb3_vla/libero``) and set ``LIBERO_CONFIG_PATH`` to it.

Scene and object assets: the PyPI ``libero`` package ships none and downloads them from the Hugging Face hub at
first use. Pass ``assets_path=`` (or set ``SB3_VLA_LIBERO_ASSETS``) to use a local folder instead (the ``assets/``
folder of a LIBERO checkout); with neither, LIBERO's own lookup (package folder, then download) is kept, and an env
that finds no assets that way raises the error of :func:`require_assets` (naming ``SB3_VLA_LIBERO_ASSETS``) before
robosuite fails on a missing scene file.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

#: Environment variable naming a local LIBERO asset folder (the one holding ``scenes/``, ``stable_scanned_objects/``).
ASSETS_ENV_VAR = "SB3_VLA_LIBERO_ASSETS"
_ASSET_SUBDIRS = ("articulated_objects", "scenes", "stable_scanned_objects", "textures", "turbosquid_objects")


def libero_installed() -> bool:
    return importlib.util.find_spec("libero") is not None and importlib.util.find_spec("robosuite") is not None


def _package_root() -> Path:
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "LIBERO tasks need libero and robosuite 1.4.0: run .ci/install_libero.sh "
            "(pip install libero==0.1.1 robosuite==1.4.0 --no-deps, then their small dependencies)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "libero"


def default_config(datasets: str | None = None) -> dict[str, str]:
    """The paths LIBERO's config.yaml holds, pointing at the installed ``libero`` package."""
    root = _package_root()
    return {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": datasets or str(root.parent / "datasets"),
        "assets": str(root / "assets"),
    }


def ensure_config() -> Path:
    """Make sure ``libero.libero`` finds a config.yaml on import (writing ours if needed); returns its folder."""
    env_path = os.environ.get("LIBERO_CONFIG_PATH")
    if env_path is None and (Path.home() / ".libero" / "config.yaml").is_file():
        return Path.home() / ".libero"  # the user's own LIBERO set-up
    folder = Path(env_path) if env_path else Path(os.environ.get("SB3_VLA_CACHE", Path.home() / ".cache" / "sb3_vla"))
    if not env_path:
        folder = folder / "libero"
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        import yaml

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".config.yaml.{os.getpid()}"
        tmp.write_text(yaml.safe_dump(default_config()))
        os.replace(tmp, cfg)  # atomic: subprocess envs may race to write it
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    return folder


def check_assets(path: str | os.PathLike[str]) -> Path:
    """Validate a LIBERO asset folder (``assets/`` with ``scenes/``, ``stable_scanned_objects/`` ...)."""
    p = Path(path).expanduser().resolve()
    missing = [d for d in _ASSET_SUBDIRS if not (p / d).is_dir()]
    if missing:
        raise ValueError(
            f"{p} is not a LIBERO asset folder: it lacks {missing}. Point assets_path (or ${ASSETS_ENV_VAR}) at the "
            "'assets' folder of LIBERO (libero/libero/assets in its repository), or unset both to let LIBERO "
            "download the assets from the Hugging Face hub"
        )
    return p


def import_libero(assets_path: str | os.PathLike[str] | None = None) -> Any:
    """Import and return ``libero.libero`` ready to build envs (config written, robosuite patched, assets chosen).

    :param assets_path: local LIBERO asset folder; default ``$SB3_VLA_LIBERO_ASSETS``, else LIBERO's own lookup
        (which downloads from the Hugging Face hub when the package has no assets).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless; before robosuite / mujoco pick a GL backend
    if not libero_installed():
        _package_root()  # raises the install hint
        raise ImportError("LIBERO tasks need robosuite==1.4.0: pip install robosuite==1.4.0 --no-deps")
    ensure_config()
    import sb3_vla.envs.libero.compat as compat

    compat.apply()
    import libero.libero as libero_pkg

    path = assets_path if assets_path is not None else os.environ.get(ASSETS_ENV_VAR)
    if path:
        # LIBERO's get_assets_path() returns this cached folder when it exists (read at every object build)
        libero_pkg._assets_path_cache = str(check_assets(path))
    return libero_pkg


def require_assets(libero_pkg: Any) -> Path:
    """The asset folder LIBERO reads (``libero_pkg.get_assets_path()``); a ``ValueError`` naming
    ``SB3_VLA_LIBERO_ASSETS`` and how to set it when that folder does not exist or holds no ``scenes/`` (the PyPI
    package ships no assets, and LIBERO's download from the Hugging Face hub failed or was not possible)."""
    path = Path(libero_pkg.get_assets_path())
    if not (path / "scenes").is_dir():
        raise ValueError(
            f"LIBERO has no scene assets: {path} {'holds no scenes/' if path.is_dir() else 'does not exist'}. The "
            "libero package from PyPI ships none and downloads them from the Hugging Face hub at first use, which "
            "did not work here (offline?). Point sb3-vla at a local copy of LIBERO's asset folder (the one holding "
            f"scenes/, stable_scanned_objects/, textures/ ...: libero/libero/assets in the LIBERO repository): "
            f"export {ASSETS_ENV_VAR}=/path/to/LIBERO/libero/libero/assets before running, or pass "
            "assets_path='/path/to/assets' to the env (sb3_vla.train --env-kwargs assets_path:/path/to/assets)"
        )
    return path
