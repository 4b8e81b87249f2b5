"""placeholder"""
from __future__ import annotations
from typing import Any
import numpy as np

class _NoController:
    def reset(self, seed: int) -> None:
        pass
    def act(self, env: Any) -> np.ndarray:
        raise NotImplementedError

def make_controller(env: Any, noise: float | None = None) -> Any:
    return _NoController()
