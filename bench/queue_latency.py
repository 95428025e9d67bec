"""Queue latency: from the train POST's response to the trainer's first step, model load excluded.

Subject: `POST /v1/tenants/{t}/train/lora` through gunicorn; the job goes through the product's
path (snapshot compiled in the request, RQ `training` queue on Redis db 15, a real
`manage.py rqworker training` process, the local backend's child process running
`python -m training.trainer`). Clock: the response's arrival (client) to the `ts` of the first
`step` event in the trainer's events.jsonl. The breakdown: to the RQ job's start (queue pickup),
to the trainer's `started` event (bundle write, process start, imports, model load, trainer
construction), to the first step.

Baseline: the same training launched by hand, the way one runs a TRL script: the bare TRL
script (`bench/trl_baseline.py`) started as a process on the same data; clock from the launch to
the end of its first step. Both sides include a Python process start, imports and loading the
same tiny model; the model load time (measured separately, in a fresh process, median of 3) is
subtracted from both, as the issue asks. Goal: none given; the ratio shows what the queue adds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import common, env
from bench.common import REPO, CannotRun, Comparison, Fact, Report
from bench.loadgen import run_load
from training.trainer.events import read_events

TITLE = "7. Queue latency: train POST response to the trainer's first step (model load excluded)"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def model_load_seconds(model: Path, repeats: int = 3) -> float:
    """Loading the weights alone, in a fresh process, imports done before the clock starts."""
    code = ("import time,sys;from transformers import AutoModelForCausalLM;"
            "from training.trainer.modeling import load_base_model as l;"
            "t=time.perf_counter();l(sys.argv[1]);print(time.perf_counter()-t)")
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code, str(model)], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        runs.append(float(out.strip().splitlines()[-1]))
    return common.median(runs)


def prepare_tenant(server, slug: str, corrections: int) -> env.Api:
    tenant, secret = env.tenant_make(slug)
    api = env.Api(server, tenant.slug, secret)
    logged = run_load(
        server.base_url, method="POST", path_for=lambda i: api.path("conversations"),
        body_for=lambda i: json.dumps({"conversation_id": f"conv_{i}", "messages": [
            {"message_id": f"m{i}q", "role": "user", "content": f"What is the price of item {i}?"},
            {"message_id": f"m{i}a", "role": "assistant", "content": "It costs ten euros."}]}
        ).encode(), headers=api.headers, concurrency=4, total_requests=corrections)
    given = run_load(
        server.base_url, method="POST", path_for=lambda i: api.path("feedback"),
        body_for=lambda i: json.dumps({"conversation_id": f"conv_{i}", "message_id": f"m{i}a",
                                       "type": "correction",
                                       "correction": f"Item {i} costs {i % 50 + 1} euros.",
                                       "metadata": {"user_id": "u1"}}).encode(),
        headers=api.headers, concurrency=4, total_requests=corrections)
    if logged.ok != corrections or given.ok != corrections:
        raise CannotRun(f"preparing feedback failed: {logged.summary()} {given.summary()} "
                        f"{given.sample_bodies}")
    return api


def start_worker() -> subprocess.Popen:
    log_path = env.VAR_DIR / "rqworker.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "training", "default"], cwd=REPO,
        env=dict(os.environ), stdout=open(log_path, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    import django_rq
    from rq import Worker

    queue = django_rq.get_queue("training")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(w.pid == proc.pid for w in Worker.all(queue=queue)):
            return proc
        if proc.poll() is not None:
            raise CannotRun(f"rqworker exited; see {log_path}")
        time.sleep(0.2)
    proc.terminate()
    raise CannotRun(f"rqworker did not register within 60 s; see {log_path}")


def body(args, report: Report) -> None:
    env.configure()
    env.require_route("/v1/tenants/x/train/lora", "train POST")
    import django_rq
    from rq.job import Job

    from training.models import TrainingJob

    corrections = 60
    model = env.tiny_base_path()
    load_s = model_load_seconds(model, repeats=1 if args.quick else 3)
    report.facts.append(Fact("model load (tiny base, fresh process, median)",
                             round(load_s, 3), "s", "subtracted from both sides"))
    params = {"min_feedback_count": 50, "lora_r": 8, "lora_alpha": 16, "epochs": 1,
              "learning_rate": 2e-4, "batch_size": 4, "warmup_ratio": 0.1, "weight_decay": 0.01}
    report.inputs = {"corrections": corrections, "train_params": json.dumps(params),
                     "worker": "manage.py rqworker training default (1 process)",
                     "backend": "local"}
    work = env.VAR_DIR / "queue_latency"
    work.mkdir(parents=True, exist_ok=True)
    django_rq.get_queue("training").empty()
    breakdowns: list[dict] = []

    with env.Server() as server:
        api = prepare_tenant(server, "bench-queue", corrections)
        worker = start_worker()
        try:
            def platform(i: int) -> float:
                status, job = api.call("POST", "train/lora", params, expect=(200, 201, 202))
                t_response = time.time()
                job_id = job["job_id"]
                deadline = time.monotonic() + 300
                first_step = started = None
                row = None
                while time.monotonic() < deadline:
                    row = TrainingJob.objects.get(pk=job_id)
                    if row.work_dir:
                        events_file = Path(row.work_dir) / "output" / "events.jsonl"
                        if events_file.exists():
                            events = read_events(events_file)
                            started = next((e for e in events if e["type"] == "started"), None)
                            first_step = next((e for e in events if e["type"] == "step"), None)
                            if first_step:
                                break
                    if row.status in ("failed", "cancelled"):
                        raise CannotRun(f"job {job_id} {row.status}: {row.failure_reason}")
                    time.sleep(0.05)
                else:
                    raise CannotRun(f"job {job_id} reached no step in 300 s ({row.status})")
                rq_job = Job.fetch(row.rq_job_id, connection=django_rq.get_connection("training"))
                picked = rq_job.started_at.timestamp() if rq_job.started_at else None
                total = _ts(first_step["ts"]) - t_response
                breakdowns.append({
                    "to_worker_pickup_s": picked - t_response if picked else None,
                    "to_trainer_started_s": _ts(started["ts"]) - t_response if started else None,
                    "to_first_step_s": total,
                })
                while TrainingJob.objects.get(pk=job_id).status not in TrainingJob.TERMINAL:
                    time.sleep(0.2)  # one worker: let this job finish before the next run
                return total - load_s

            def bare(i: int) -> float:
                out = work / f"trl-{i}"
                shutil.rmtree(out, ignore_errors=True)  # no events of an earlier run
                out.mkdir(parents=True)
                train = out / "train.jsonl"
                train.write_text("".join(json.dumps({"messages": [
                    {"role": "user", "content": f"What is the price of item {k}?"},
                    {"role": "assistant", "content": f"Item {k} costs {k % 50 + 1} euros."}]})
                    + "\n" for k in range(corrections)))
                launched = time.time()
                proc = subprocess.run(
                    [sys.executable, str(REPO / "bench" / "trl_baseline.py"), "--model",
                     str(model), "--data", str(train), "--out", str(out), "--batch-size", "4",
                     "--lora-r", "8", "--lora-alpha", "16"], cwd=REPO, capture_output=True,
                    text=True, check=False)
                if proc.returncode:
                    raise CannotRun(f"TRL baseline failed: {proc.stderr[-1000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                return result["first_step_wall"] - launched - load_s

            results = common.rotated(args.runs, {"baseline": bare, "subject": platform},
                                     log=common.log)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()

    report.comparisons.append(Comparison(
        metric="time to first step, model load excluded", unit="s",
        baseline_label="bare TRL script launched directly",
        subject_label="train POST response -> first step (queue, worker, local backend)",
        baseline_runs=results["baseline"], subject_runs=results["subject"],
        higher_is_better=False))
    for key in ("to_worker_pickup_s", "to_trainer_started_s", "to_first_step_s"):
        values = [b[key] for b in breakdowns if b[key] is not None]
        report.facts.append(Fact(f"platform: response -> {key[3:-2].replace('_', ' ')} (median)",
                                 round(common.median(values), 3) if values else None, "s"))
    report.notes.append("The job is enqueued on commit, before the response is written, so the "
                        "worker can pick it up before the client has the response (a negative "
                        "pickup time). Import time of torch/transformers/TRL is on both sides.")


def main(argv=None) -> int:
    return common.main("queue_latency", TITLE, body, argv=argv, default_runs=3)


if __name__ == "__main__":
    raise SystemExit(main())
