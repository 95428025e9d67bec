"""A dry-run job for a first allocation: the training template with an environment probe as
each task (training/trainer/probe.py), submitted over the same SSH connection as real jobs.

    python manage.py slurm_dry_run --render-only        # print the batch script, submit nothing
    python manage.py slurm_dry_run                      # stage, sbatch, print the Slurm id
    python manage.py slurm_dry_run --wait 900           # ... and wait, then print the job log

The script has the #SBATCH lines, modules, environment, srun, CPU masks and container of a
training job under the current SLURM_* settings (a 10-minute time limit), so what it prints is
what a job will meet: each rank's view of the container, the GPUs (torch.cuda device count, HIP
version, names), RCCL/NCCL and MIOpen environment, packages, CPU binding, a timed all_reduce
across all ranks, and in the batch step `module list`, `singularity --version` and `rocm-smi`.
It bills like any job of that size for the minutes it runs.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from training.backends.slurm import SlurmBackend, slurm_state_to_backend
from training.backends.slurm_script import checked_slurm_id, render_probe_script
from training.backends.ssh import ClusterUnreachable, RemoteCommandFailed, ssh_session


class Command(BaseCommand):
    help = "Submit (or print) a dry-run Slurm job that prints the environment jobs will run in."

    def add_arguments(self, parser):
        parser.add_argument("--render-only", action="store_true",
                            help="print the batch script and submit nothing")
        parser.add_argument("--wait", type=float, default=0,
                            help="seconds to wait for the job to finish and print its log")
        parser.add_argument("--time-limit", default="00:10:00")
        parser.add_argument("--size-mb", type=float, default=None,
                            help="all_reduce size in MB (default 256 on GPUs, 4 on CPUs)")

    def handle(self, *args, render_only=False, wait=0, time_limit="00:10:00", size_mb=None,
               **options):
        backend = SlurmBackend()
        probe_id = "dryrun_" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        script = render_probe_script(backend.config, probe_id, time_limit=time_limit,
                                     size_mb=size_mb)
        if render_only:
            self.stdout.write(script, ending="")
            return
        job_dir = backend.config.job_dir(probe_id)
        try:
            with ssh_session(backend.target) as s:
                s.makedirs(backend.config.remote_work_dir)
                s.makedirs(job_dir)
                backend._stage_code(s, job_dir)  # the probe travels with the trainer package
                s.put_bytes(script.encode(), f"{job_dir}/job.sbatch", mode=0o750)
                result = s.run(["sbatch", "--parsable", f"--chdir={job_dir}",
                                f"{job_dir}/job.sbatch"])
        except (ClusterUnreachable, RemoteCommandFailed) as exc:
            raise CommandError(f"could not submit the dry run: {exc}") from exc
        slurm_id = checked_slurm_id(result.stdout.strip().splitlines()[-1].split(";")[0].strip())
        log = f"{job_dir}/slurm-{slurm_id}.out"
        self.stdout.write(f"dry run {probe_id} submitted as Slurm job {slurm_id}; log: {log}")
        if wait <= 0:
            return
        deadline = time.monotonic() + wait
        while True:
            with ssh_session(backend.target) as s:
                info = backend.job_info(s, slurm_id)
                state = slurm_state_to_backend(info.state)
                if state in ("completed", "failed", "cancelled", "retry"):
                    got = s.read_from(log, 0, 4 * 1024 * 1024)
                    self.stdout.write(got[0].decode("utf-8", "replace") if got else
                                       f"(no log at {log})")
                    self.stdout.write(f"Slurm job {slurm_id}: {info.state} "
                                      f"(exit code {info.exit_code or '?'})")
                    if state != "completed":
                        raise CommandError(f"the dry run ended {info.state}")
                    return
            if time.monotonic() > deadline:
                raise CommandError(f"Slurm job {slurm_id} still {info.state or 'unknown'} "
                                   f"after {wait:g} s; its log will be at {log}")
            time.sleep(min(5.0, max(0.5, wait / 100)))
