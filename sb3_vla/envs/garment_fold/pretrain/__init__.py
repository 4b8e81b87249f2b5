"""Train a :class:`~sb3_vla.models.small_vla.SmallVLA` by behaviour cloning on the env's scripted demonstrations.

Usage::

    python -m sb3_vla.envs.garment_fold.pretrain --env GarmentFold-v0 --demos 200 --out DIR [--epochs E] [--seed S]
        [--eval-episodes K] [--dagger-rounds R] [--dagger-episodes M] [--dagger-beta B]
    python -m sb3_vla.envs.garment_fold.pretrain --env GarmentFold-v0 --demos 20 --out DIR --freeze-encoder \\
        --init CKPT  # Strategy 2

Steps: (1) collect ``--demos`` episodes of the env's privileged scripted controller (``env.unwrapped.
scripted_action()``, perception noise ``--noise`` m) with the rendered 128x128 RGB, the instruction and the
proprioception, keeping only successful episodes unless ``--keep-failed``; (2) train by behaviour cloning (MSE on
the normalised joint targets of an action chunk, BCE on the stage-advance dim); (2b) DAgger: ``--dagger-rounds``
rounds, each rolling out the current model closed loop (with probability ``beta`` per step the folder's action
instead, beta decaying per round) on ``--dagger-episodes`` seeded episodes, labelling every visited state with
the folder's action, adding them to the data and fine-tuning on the aggregate; (3) evaluate the model
closed loop (its own actions) on ``--eval-episodes`` seeded episodes; (4) write ``DIR/NAME.pt`` (state dict +
config + metadata, loadable with ``torch.load(weights_only=True)``) and the model card ``DIR/NAME.md``.

Demonstrations, DAgger episodes, the training states (saved every epoch) and per-episode evaluation results go
to ``--work-dir`` (default ``DIR/NAME_work``); re-running the same command resumes from them. Demo collection,
DAgger rollouts and evaluation run in ``--workers`` subprocesses. With ``--snap-hands`` (default) each GarmentFold
hand outputs the nearest hand posture the demonstrations use (see :func:`set_hand_snap`).

Modules: :mod:`.rollouts` (demonstration, evaluation and DAgger episodes, worker pool), :mod:`.dataset`
(:class:`DemoData`, normalisation and hand-snap statistics), :mod:`.training` (:func:`bc_loss`, :func:`fit`),
:mod:`.card` (the model card), :mod:`.cli` (:func:`parse_args`, :func:`main`).

Example (seconds: two 8-step demos, one epoch, no evaluation)::

    from sb3_vla.envs.garment_fold.pretrain import main

    meta = main(["--demos", "2", "--epochs", "1", "--eval-episodes", "0", "--dagger-rounds", "0",
                 "--max-episode-steps", "8", "--workers", "1", "--keep-failed", "--out", "/tmp/tiny_vla"])
    meta["steps_trained"]  # 16
"""

from __future__ import annotations

from sb3_vla.envs.garment_fold.pretrain.card import dagger_card, model_card, wilson
from sb3_vla.envs.garment_fold.pretrain.cli import (
    DAGGER_BETA,
    DAGGER_EPISODES,
    DAGGER_EPOCHS,
    DAGGER_EVAL_EPISODES,
    DAGGER_LR,
    DAGGER_ROUNDS,
    main,
    parse_args,
)
from sb3_vla.envs.garment_fold.pretrain.dataset import DemoData, set_hand_snap, set_normalisation
from sb3_vla.envs.garment_fold.pretrain.rollouts import (
    DAGGER_OFFSET,
    DART_RHO,
    EVAL_OFFSET,
    SEED_STRIDE,
    STATE_KEYS,
    VAL_OFFSET,
    collect_episode,
    dagger_episode,
    evaluate_episode,
    make_env,
    run_jobs,
)
from sb3_vla.envs.garment_fold.pretrain.training import bc_loss, fit

__all__ = [
    "DAGGER_BETA",
    "DAGGER_EPISODES",
    "DAGGER_EPOCHS",
    "DAGGER_EVAL_EPISODES",
    "DAGGER_LR",
    "DAGGER_OFFSET",
    "DAGGER_ROUNDS",
    "DART_RHO",
    "EVAL_OFFSET",
    "SEED_STRIDE",
    "STATE_KEYS",
    "VAL_OFFSET",
    "DemoData",
    "bc_loss",
    "collect_episode",
    "dagger_card",
    "dagger_episode",
    "evaluate_episode",
    "fit",
    "main",
    "make_env",
    "model_card",
    "parse_args",
    "run_jobs",
    "set_hand_snap",
    "set_normalisation",
    "wilson",
]
