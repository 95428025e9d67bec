"""What one rank of a batch job sees: `python -m training.trainer.probe` (the dry run's task).

Rendered into a batch script by `manage.py slurm_dry_run` from the same template as a training
job (same #SBATCH lines, modules, environment, srun, CPU masks and container), it answers what
an operator wants to know on a first allocation before a real job spends GPU-hours: the
container, the GPUs (ROCm/HIP or CUDA, device count and names), the collective library's
environment, the packages the trainer needs, the CPU binding, and whether a collective across
all ranks works (torch.distributed all_reduce over RCCL/NCCL on GPUs, gloo on CPUs), timed.

Prints one line per rank, `synapsex-probe {json}`, and local rank 0 also runs `rocm-smi` (or
`nvidia-smi`) when the node has it. Exits non-zero when the all_reduce fails or gives a wrong
sum. No Django, no network beyond the ranks' own rendezvous.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "deepspeed", "datasets",
            "safetensors")
ENV_PREFIXES = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_JOB_NODELIST",
                "SLURM_CPUS_PER_TASK", "SLURM_GPUS", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                "MASTER_", "NCCL_", "RCCL_", "FI_", "CXI_", "MIOPEN_", "HIP_", "ROCR_", "ROCM_",
                "HSA_", "CUDA_VISIBLE", "SINGULARITY", "APPTAINER", "HF_", "OMP_NUM_THREADS",
                "DS_", "TORCH_EXTENSIONS_DIR", "PYTHONPATH")


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _env() -> dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


def _gpu_facts(torch) -> dict:
    facts = {
        "cuda_available": torch.cuda.is_available(),
        "hip_version": getattr(torch.version, "hip", None),
        "cuda_version": torch.version.cuda,
        "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if facts["device_count"]:
        facts["devices"] = [torch.cuda.get_device_name(i) for i in range(facts["device_count"])]
        try:
            facts["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            facts["nccl_version"] = f"unavailable: {exc}"
    return facts


def _all_reduce(torch, rank: int, local_rank: int, world: int, size_mb: float) -> dict:
    """One warm-up and one timed all_reduce of `size_mb` MB of float32 across all ranks."""
    import torch.distributed as dist

    gpu = torch.cuda.is_available()
    backend = "nccl" if gpu else "gloo"  # "nccl" is RCCL in a ROCm build of torch
    if gpu:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    started = time.monotonic()
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=180))
    rendezvous = time.monotonic() - started
    try:
        ones = torch.ones(1, device=device)
        dist.all_reduce(ones)
        numel = max(1, int(size_mb * 1024 * 1024 / 4))
        data = torch.ones(numel, device=device)
        dist.all_reduce(data)  # warm-up
        if gpu:
            torch.cuda.synchronize()
        data.fill_(1.0)
        dist.barrier()
        t0 = time.monotonic()
        dist.all_reduce(data)
        if gpu:
            torch.cuda.synchronize()
        seconds = time.monotonic() - t0
        ok = float(ones.item()) == world and float(data[0].item()) == world
        # Bus bandwidth as nccl-tests define it for all_reduce: 2 (n-1)/n x bytes / time.
        busbw = (2 * (world - 1) / world) * numel * 4 / seconds / 1e9 if seconds > 0 else None
        return {"backend": backend, "ok": ok, "sum": float(ones.item()),
                "rendezvous_seconds": round(rendezvous, 3), "size_mb": size_mb,
                "seconds": round(seconds, 4),
                "bus_bandwidth_gb_s": round(busbw, 3) if busbw else None}
    finally:
        dist.destroy_process_group()


def _smi() -> str:
    for tool, args in (("rocm-smi", ["--showproductname", "--showuse", "--showmeminfo", "vram"]),
                       ("nvidia-smi", [])):
        path = shutil.which(tool)
        if path:
            try:
                out = subprocess.run([path, *args], capture_output=True, text=True, timeout=60)
                return f"$ {tool} {' '.join(args)}\n{out.stdout}{out.stderr}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{tool}: {exc}"
    return "no rocm-smi or nvidia-smi on PATH"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.trainer.probe")
    parser.add_argument("--size-mb", type=float, default=None,
                        help="all_reduce size (default 256 on GPUs, 4 on CPUs)")
    parser.add_argument("--no-collective", action="store_true")
    args = parser.parse_args(argv)

    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    facts: dict = {
        "rank": rank, "local_rank": local_rank, "world_size": world,
        "host": socket.gethostname(), "python": sys.version.split()[0],
        "executable": sys.executable, "platform": platform.platform(),
        "in_container": bool(os.environ.get("SINGULARITY_CONTAINER")
                             or os.environ.get("APPTAINER_CONTAINER")),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "packages": _versions(), "env": _env(),
    }
    status = 0
    try:
        import torch

        facts["gpu"] = _gpu_facts(torch)
        try:
            from deepspeed.accelerator import get_accelerator

            accel = get_accelerator()
            facts["deepspeed_accelerator"] = {
                "name": accel.device_name(),
                "communication_backend": accel.communication_backend_name()}
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            facts["deepspeed_accelerator"] = f"unavailable: {exc}"
        if not args.no_collective and world > 1:
            size = args.size_mb if args.size_mb is not None else (
                256.0 if torch.cuda.is_available() else 4.0)
            facts["all_reduce"] = _all_reduce(torch, rank, local_rank, world, size)
            status = 0 if facts["all_reduce"]["ok"] else 1
    except Exception as exc:  # noqa: BLE001 - the probe reports, then fails
        facts["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    print("synapsex-probe " + json.dumps(facts, sort_keys=True), flush=True)
    if local_rank == 0:
        print(f"[rank {rank}] {_smi()}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
