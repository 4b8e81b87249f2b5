"""``python -m sb3_vla.envs.garment_fold.pretrain``: see :mod:`sb3_vla.envs.garment_fold.pretrain`."""

from sb3_vla.envs.garment_fold.pretrain.cli import main

main()
