import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch as th

# Small policies on a 2-core machine: one thread avoids OpenMP stalls when other processes share the cores.
th.set_num_threads(1)
