"""Batched forward latency and throughput of the frozen base backends at B = 1, 8, 32.

Models: open_clip ViT-B-32 (random init: timing only, same compute as the trained weights), and the tiny models of
the test suite (tiny CLIP, tiny LLaVA through ``hf:`` with action-token generation, tiny ``nn.Module``, tiny SB3
policy). On CUDA the ViT-B-32 and LLaVA rows are repeated in fp32, bf16 and (LLaVA) 4-bit.

Run: ``python -m benchmarks.base_latency [--repeats 5] [--batch-sizes 1 8 32] [--device auto] [--threads 1]``;
the figures are printed and written to the ``base_latency`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch as th

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-model builders live with the tests

from benchmarks._results import write_section  # noqa: E402
from sb3_vla.bases import BaseModel, VLABatch  # noqa: E402


def _batch(n: int, image_size: int, rng: np.random.Generator) -> VLABatch:
    obs: dict[str, np.ndarray] = {
        "rgb": rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
        "state": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
    }
    texts = [f"pick up the {c} block" for c in ("red", "blue", "green", "red")]
    return VLABatch(obs=obs, instructions=[texts[i % 4] for i in range(n)], env_ids=np.arange(n))


def time_base(base: BaseModel, b: int, image_size: int, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median and min seconds of one ``predict`` on a batch of ``b`` (text embeddings cached after warm-up)."""
    rng = np.random.default_rng(0)
    batch = _batch(b, image_size, rng)
    for _ in range(warmup):
        base.predict(batch)
    times = []
    for _ in range(repeats):
        if th.cuda.is_available():
            th.cuda.synchronize()
        t0 = time.perf_counter()
        base.predict(batch)
        if th.cuda.is_available():
            th.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def build_models(tmp: Path, device: str) -> list[tuple[str, int, Callable[[], BaseModel]]]:
    """``(label, image size, builder)`` for every row; builders run lazily so one failure does not stop the rest."""
    import _tiny_models as tm

    from sb3_vla.bases.backends.clip import ClipBase
    from sb3_vla.bases.backends.hf import HFVLABase
    from sb3_vla.bases.backends.module import ModuleBase
    from sb3_vla.bases.backends.sb3_policy import SB3PolicyBase

    cuda = th.device(device).type == "cuda" if device != "auto" else th.cuda.is_available()
    ckpt = tm.save_tiny_clip(tmp / "clip")
    llava = tm.save_tiny_llava(tmp / "llava")
    th.manual_seed(0)
    module_ckpt = tmp / "tiny_policy.pt"
    th.save(tm.TinyPolicy().state_dict(), module_ckpt)
    sb3_zip = tm.train_tiny_sb3(tmp / "sac", "sac", steps=32)
    obs_space = tm.TinyDictEnv(rgb=True).observation_space

    rows: list[tuple[str, int, Callable[[], BaseModel]]] = [
        (
            "clip ViT-B-32 (random init), fp32, image+text",
            224,
            lambda: ClipBase("ViT-B-32", None, device=device, precision="fp32"),
        ),
        (
            "clip tiny (32 px, width 32), fp32, image+text",
            32,
            lambda: ClipBase(tm.TINY_CLIP, str(ckpt), device=device, precision="fp32"),
        ),
        (
            "hf tiny LLaVA, fp32, 3 action tokens + vision/LLM embedding",
            32,
            lambda: HFVLABase(llava, unnorm_key="toy_a", embedding="vision+llm", dtype="float32", device=device),
        ),
        (
            "module tiny MLP (state + mean rgb)",
            8,
            lambda: ModuleBase("_tiny_models.TinyPolicy", module_ckpt, observation_space=obs_space, device=device),
        ),
        ("sb3 tiny SAC policy (MultiInputPolicy)", 8, lambda: SB3PolicyBase(sb3_zip, device=device)),
    ]
    if cuda:
        rows += [
            (
                "clip ViT-B-32 (random init), bf16, image+text",
                224,
                lambda: ClipBase("ViT-B-32", None, device=device, precision="bf16"),
            ),
            (
                "hf tiny LLaVA, bf16",
                32,
                lambda: HFVLABase(llava, unnorm_key="toy_a", embedding="vision+llm", dtype="bfloat16", device=device),
            ),
            (
                "hf tiny LLaVA, 4-bit (bitsandbytes)",
                32,
                lambda: HFVLABase(
                    llava, unnorm_key="toy_a", embedding="vision+llm", quantization="4bit", device=device
                ),
            ),
        ]
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 by default: on a shared CPU, OpenMP sync stalls make 2+ threads far slower)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)

    lines = [
        "## Frozen base backends: batched forward latency",
        "",
        f"Command: `python -m benchmarks.base_latency --repeats {args.repeats} "
        f"--batch-sizes {' '.join(map(str, args.batch_sizes))} --device {args.device} --threads {args.threads}`. "
        f"Median of {args.repeats} timed `predict` calls after 2 warm-up calls (instruction text embeddings are "
        f"cached by then); torch {th.__version__} with {th.get_num_threads()} CPU thread(s) (on a shared CPU, OpenMP "
        "synchronisation stalls make small models far slower with more threads than free cores).",
        "",
    ]
    if not th.cuda.is_available():
        lines += [
            "No GPU was available in this session, so every figure is CPU-only; the fp32 / bf16 / 4-bit GPU rows "
            "are produced by the same command on a CUDA machine. The CPU was shared with other jobs, so treat "
            "small differences as noise.",
            "",
        ]
    lines += [
        "| base | B | ms / batch (median) | ms / batch (min) | ms / sample | samples / s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, size, build in build_models(Path(tmp), args.device):
            try:
                base = build()
            except Exception as e:
                lines.append(f"| {label} | - | failed: {type(e).__name__}: {str(e)[:80]} | | | |")
                print(lines[-1], flush=True)
                continue
            for b in args.batch_sizes:
                med, best = time_base(base, b, size, args.repeats)
                row = f"| {label} | {b} | {med * 1e3:.2f} | {best * 1e3:.2f} | {med * 1e3 / b:.2f} | {b / med:.1f} |"
                lines.append(row)
                print(row, flush=True)
            base.close()
    body = "\n".join(lines)
    if not args.no_write:
        write_section("base_latency", body)
    return body


if __name__ == "__main__":
    main()
