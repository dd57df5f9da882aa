"""The `hydra/launcher=slurm` launcher: hydra-submitit-launcher's, plus what a user of a real cluster needs.

- Before submitting, the request (CPUs, memory, GPUs, nodes, time per job) is compared with what `sinfo`
  reports for the partition: a job no node could ever run would pend forever ("PartitionConfig"), so
  the sweep stops instead, with one line saying what to lower.
- While the array runs, one log line per change says which jobs are pending (and SLURM's reason),
  running or done, by SLURM job id. Jobs are watched with `squeue`, which every cluster answers;
  submitit's watcher calls `sacct`, which prints only warnings where there is no accounting database.
- A job that ended without a result (cancelled, killed, node failure) does not abort the wait for the
  others: when all have ended, one line names the lost ones and how to resume them (the same command
  with the same hydra.sweep.dir skips completed jobs and resumes the others from their last.ckpt).

Time limits and preemption are submitit's: SLURM sends USR2 `signal_delay_s` before the limit (or at
preemption), submitit's handler requeues the job (`checkpoint` resubmits the same job) and exits; the
requeued job runs the same config in the same dir, so cnnstudy resumes it from checkpoints/last.ckpt.
"""

import logging
import re
import shutil
import subprocess
import time
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from cnnstudy.errors import fail

log = logging.getLogger("cnnstudy.slurm")

# squeue states of a job that has not ended yet (anything else has: COMPLETED, FAILED, CANCELLED, ...)
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"}
# pending reasons that no waiting resolves: the request exceeds what the partition allows or has
NEVER_STARTS = {"PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints"}


def slurm_minutes(text: str) -> float:
    """SLURM's time limit format ([days-]hours:minutes:seconds, minutes:seconds, minutes) in minutes."""
    if text in ("infinite", "UNLIMITED", ""):
        return float("inf")
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        return int(days or 0) * 1440 + parts[0]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts)[-3:]
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def gpu_count(gres: str) -> int:
    """GPUs in sinfo's %G column, e.g. 'gpu:a100:4(S:0-1),shard:8' -> 4; '(null)' -> 0."""
    total = 0
    for entry in gres.split(","):
        if entry.startswith("gpu:"):
            count = re.match(r"\d+", entry.split("(")[0].rsplit(":", 1)[-1])
            total += int(count.group()) if count else 0
    return total


def partition_nodes(partition: str | None) -> tuple[str, list[dict]]:
    """The partition (the default one when None) and its nodes as sinfo reports them."""
    lines = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G|%l"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rows = [line.split("|") for line in lines if line.strip()]
    names = sorted({row[0].rstrip("*") for row in rows})
    if partition is None:
        defaults = {row[0].rstrip("*") for row in rows if row[0].endswith("*")}
        if not defaults:
            fail(f"this cluster has no default partition: choose one, hydra.launcher.partition={'|'.join(names)}")
        partition = defaults.pop()
    nodes = [
        {"name": node, "cpus": int(cpus), "mem_mb": int(mem), "gpus": gpu_count(gres), "minutes": slurm_minutes(lim)}
        for name, node, cpus, mem, gres, lim in rows
        if name.rstrip("*") == partition
    ]
    if not nodes:
        fail(f"hydra.launcher.partition={partition}: no such partition here (sinfo lists {', '.join(names)})")
    return partition, nodes


def check_request(params: dict) -> None:
    """Stop with one line if no node of the partition could ever run one job of `params` (the launcher's
    config): SLURM would accept the array and leave it pending for ever."""
    partition, nodes = partition_nodes(params.get("partition"))
    tasks = params.get("tasks_per_node") or 1
    cpus = (params.get("cpus_per_task") or 1) * tasks
    mem_mb = (params.get("mem_gb") or 0) * 1024
    gpus = params.get("gpus_per_node") or 0
    minutes = params.get("timeout_min") or 0
    request = (
        f"each job asks {cpus} CPUs (cpus_per_task={params.get('cpus_per_task')} x tasks_per_node={tasks}), "
        f"{params.get('mem_gb')} GB, {gpus} GPUs per node for {minutes} min"
    )
    fitting = [n for n in nodes if n["cpus"] >= cpus and n["mem_mb"] >= mem_mb and n["gpus"] >= gpus]
    if not fitting:
        largest = max(nodes, key=lambda n: (n["cpus"], n["mem_mb"], n["gpus"]))
        fail(
            f"{request}, but the largest node of partition '{partition}' has {largest['cpus']} CPUs, "
            f"{largest['mem_mb'] // 1024} GB, {largest['gpus']} GPUs (sinfo): the jobs would never start; lower "
            f"hydra.launcher.cpus_per_task / mem_gb / gpus_per_node"
        )
    if len(fitting) < (params.get("nodes") or 1):
        fail(f"{request} on {params.get('nodes')} nodes, but only {len(fitting)} node(s) of '{partition}' can")
    if minutes > fitting[0]["minutes"]:
        fail(f"hydra.launcher.timeout_min={minutes} exceeds partition '{partition}''s time limit (sinfo)")


def compress(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (SLURM's array notation)."""
    ranges: list[list[int]] = []
    for index in sorted(indices):
        if ranges and ranges[-1][1] == index - 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in ranges)


def queue_states(job_id: str) -> dict[int, tuple[str, str]] | None:
    """Array task index (0 for a job that is no array) -> (state, reason), for the tasks squeue still knows
    (finished ones are forgotten after MinJobAge, 300 s by default); None when squeue fails."""
    result = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T|%r"], capture_output=True, text=True
    )
    if result.returncode != 0:
        log.warning("slurm: squeue failed (%s); still waiting", result.stderr.strip())
        return None
    states = {}
    for line in result.stdout.splitlines():
        task, state, reason = line.split("|")
        _, _, index = task.partition("_")
        reason = "" if reason in ("None", "") else reason
        if index.startswith("["):  # pending tasks listed together: 12_[2-5%2]
            for part in index.strip("[]").split("%")[0].split(","):
                first, _, last = part.partition("-")
                for i in range(int(first), int(last or first) + 1):
                    states[i] = (state, reason)
        else:
            states[int(index or 0)] = (state, reason)
    return states


def has_result(job) -> bool:
    """submitit wrote the job's result (of every task, for a job of several tasks)."""
    return all(task.paths.result_pickle.exists() for task in (job._sub_jobs or [job]))


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher with a fit check before, progress lines during, and one
    line for lost jobs after the sweep (see the module docstring)."""

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit  # as the plugin does: plugin discovery stays fast

        if shutil.which("sbatch") is None:
            fail("hydra/launcher=slurm needs SLURM on this host: sbatch not found (scripts/slurm-local.sh up)")
        check_request(self.params)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # the plugin's mapping of the launcher config to submitit's executor parameters
        executor = submitit.AutoExecutor(
            cluster="slurm", folder=self.params["submitit_folder"], slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in shared else f"slurm_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        for number, overrides in zip(numbers, job_overrides, strict=True):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        try:
            jobs = executor.map_array(
                self,
                [list(o) for o in job_overrides],
                ["hydra.sweep.dir"] * len(numbers),
                numbers,
                [f"job_id_for_{n}" for n in numbers],
                [state] * len(numbers),
            )
        except submitit.core.utils.FailedJobError:  # submitit has printed sbatch's message: one line more
            fail("sbatch refused the sweep (its message is above); nothing was submitted", status=1)
        array_id = jobs[0].job_id.split("_")[0]
        log.info("slurm: submitted %d job(s) as %s, sweep jobs #%d-#%d", len(jobs), array_id, numbers[0], numbers[-1])
        ended = self.wait(array_id, jobs)

        lost = [
            f"#{n} ({job.job_id} {state})"
            for n, job, state in zip(numbers, jobs, ended, strict=True)
            if not has_result(job)
        ]
        if lost:
            names = ", ".join(lost)
            fail(
                f"sweep job(s) {names} ended without a result; run the same command with hydra.sweep.dir={sweep_dir} "
                f"to resume them from their last checkpoint (completed jobs are skipped)",
                status=1,
            )
        return [job.results()[0] for job in jobs]

    @staticmethod
    def wait(array_id: str, jobs: list) -> list[str]:
        """Wait until every job has ended, logging a line whenever the picture changes (job ids, states,
        pending reasons). Polls squeue every 2 s at first, backing off to once a minute on long sweeps.
        Returns each job's last state."""
        started, last_line, warned = time.time(), None, set()
        final = ["GONE"] * len(jobs)
        while True:
            queued = queue_states(array_id)
            if queued is None:  # the controller does not answer for now: jobs may well be running
                time.sleep(10)
                continue
            groups: dict[str, list[int]] = {}
            for i, job in enumerate(jobs):
                index = int(job.job_id.partition("_")[2] or 0)
                state, reason = queued.get(index, ("GONE", ""))
                final[i] = state
                if has_result(job) or state not in ACTIVE:
                    label = "done" if has_result(job) else f"ended {state}"
                else:
                    label = f"{state} ({reason})" if reason else state
                    if reason in NEVER_STARTS and reason not in warned:
                        warned.add(reason)
                        log.warning(
                            "slurm: %s pends with reason %s: it can never start (scancel %s)",
                            array_id,
                            reason,
                            array_id,
                        )
                groups.setdefault(label, []).append(index)
            array = "_" in jobs[0].job_id  # a sweep of one job is submitted as a plain job, not an array
            line = "; ".join(
                f"{label}: {array_id}_[{compress(indices)}]" if array else f"{label}: {array_id}"
                for label, indices in groups.items()
            )
            if line != last_line:
                log.info("slurm: %s", line)
                last_line = line
            if all(label == "done" or label.startswith("ended") for label in groups):
                return final
            time.sleep(min(60.0, max(2.0, (time.time() - started) / 10)))
