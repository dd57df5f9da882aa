"""The local launchers, `hydra/launcher=parallel` (joblib's loky workers) and `hydra/launcher=submitit_local`:
Hydra's, except that a stopped sweep stops everything it started.

SIGTERM, SIGINT and SIGHUP to the sweep's command are passed on to every job process it started. Each job
stops at its next batch boundary and records `interrupted` with its last checkpoint, as a plain run does
(cnnstudy.callbacks.StopOnSignal); no job starts after the signal. The launcher waits for the jobs up to
STOP_TIMEOUT_S, kills every process of its tree still alive (workers and what they started, submitit's
controllers), prints the sweep's outcomes and one line, and exits 128 + the signal. A second signal to the
command kills the tree at once. The same command resumes the sweep (docs/reliability.md).

The jobs may get the same signal twice, from the terminal or a scheduler and from the launcher: under these
launchers a job does not take a repeated signal as "end at once" (SIGNALS_FORWARDED_ENV); the launcher does.

Hydra's presets `joblib` and `submitit_local` (and cnnstudy's `parallel`, built on `joblib`) name Hydra's
launcher classes; `UseCnnstudyLaunchers`, a Hydra callback (conf/train.yaml), puts these in their place
before the sweep starts. This module is imported by Hydra's plugin scan: it imports nothing heavy at the top.
"""

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.experimental.callback import Callback
from hydra_plugins.hydra_joblib_launcher import _core as joblib_core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import DictConfig, read_write

from cnnstudy.sweep_outcomes import outcomes_block

log = logging.getLogger("cnnstudy.launchers")

# What a job records as `interrupted` (cnnstudy.callbacks.StopOnSignal), and what these launchers pass on.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Set in the jobs of a launcher that passes the command's signals on to them.
SIGNALS_FORWARDED_ENV = "CNNSTUDY_SIGNALS_FORWARDED"
# How long the jobs get, after the signal, to record `interrupted` (a batch, a metrics.json, the loggers)
STOP_TIMEOUT_S = 60


def parents() -> dict[int, int]:
    """Every live process's parent, from /proc (zombies, already dead, left out); none without /proc (not Linux:
    there the parallel launcher still passes signals on to its workers, which loky's shutdown kills)."""
    found = {}
    if not Path("/proc/self/stat").exists():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]  # the name in parentheses may hold spaces
        if state != "Z":
            found[int(entry.name)] = int(ppid)
    return found


def process_tree(root: int) -> list[int]:
    """The pids of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def send(pids, signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:  # ended meanwhile
            pass


def is_resource_tracker(pid: int) -> bool:
    try:
        return b"resource_tracker import main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def end_process_tree() -> None:
    """Kill whatever this process started that is still alive, and wait (up to 10 s) until it is gone. Not the
    resource trackers of loky and multiprocessing: they end when this process does (at the end of their pipe
    from it), after removing what the killed processes left (semaphores); killed now, they would be restarted."""

    def alive() -> list[int]:
        return [pid for pid in process_tree(os.getpid()) if not is_resource_tracker(pid)]

    send(alive(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def end_resource_trackers() -> None:
    """End loky's and multiprocessing's resource trackers now (up to 10 s), once the processes they watched are
    killed: they remove what those left (semaphores) and may warn about it on the command's stderr, which must
    come before the command's last line, not after it, as it would when they end at this process's exit.
    Nothing may start them again: a semaphore collected later (its finalizer unregisters it) would start a new
    tracker, which knows no such name and prints a KeyError after that line."""
    import multiprocessing.resource_tracker

    from joblib.externals.loky.backend import resource_tracker

    resource_tracker._resource_tracker._stop(wait_timeout=10)
    if multiprocessing.resource_tracker._resource_tracker._fd is not None:
        multiprocessing.resource_tracker._resource_tracker._stop()
    for tracker in (resource_tracker._resource_tracker, multiprocessing.resource_tracker._resource_tracker):
        tracker._send = lambda *message: None  # what it was told of is removed already


class SweepStopped(BaseException):
    """Raised by ForwardSignals(interrupt=True) out of the launcher's wait, once the signal is passed on."""


class ForwardSignals:
    """In the launching process, while jobs run: the first signal (`received`) is passed on to `job_pids()`;
    with `interrupt`, SweepStopped is then raised out of whatever the launcher waits in. A second signal
    kills the whole tree and exits at once."""

    def __init__(self, job_pids: Callable[[], list[int]], interrupt: bool = False):
        self.job_pids, self.interrupt = job_pids, interrupt
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> "ForwardSignals":
        os.environ[SIGNALS_FORWARDED_ENV] = str(os.getpid())  # the jobs inherit it
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.environ.pop(SIGNALS_FORWARDED_ENV, None)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            end_process_tree()
            os._exit(128 + signum)
        self.received = signum
        log.warning("%s: stopping the sweep's jobs", signal.Signals(signum).name)
        send(self.job_pids(), signum)
        if self.interrupt:
            raise SweepStopped


def stopped(signum: int, sweep_dir: str) -> None:
    """The end of a stopped sweep: nothing of it left alive, what the jobs recorded, one line, exit 128 + signal."""
    end_process_tree()
    end_resource_trackers()
    print(outcomes_block(Path(sweep_dir)), flush=True)
    name = signal.Signals(signum).name
    print(f"error: sweep {sweep_dir} stopped by {name}; run the same command to resume", file=sys.stderr)
    logging.shutdown()
    sys.stderr.flush()
    # not sys.exit: the interpreter's exit runs multiprocessing's finalizers, which join the queue feeder
    # threads of the killed workers (a wait on processes that are gone) after that last line
    os._exit(128 + signum)


def idle_worker() -> None:
    """A loky worker between jobs takes the stop signals as done with: its job, if it had one, has ended (had
    SIGTERM killed it, loky would end every other worker too, jobs still recording included)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: None)


class ParallelLauncher(JoblibLauncher):
    """Hydra's joblib launcher with its jobs dispatched here, one per free worker, rather than by
    joblib.Parallel: Parallel ends its workers at the first job that raises, which would kill the other jobs
    before they record `interrupted`, and queues jobs ahead that would start after the signal."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib._parallel_backends import LokyBackend
        from joblib.externals.loky import get_reusable_executor

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        backend = LokyBackend()
        n_jobs = backend.effective_n_jobs(self.joblib.get("n_jobs") or 1)
        log.info("launching %d jobs, %d at a time, sweep output dir: %s", len(job_overrides), n_jobs, sweep_dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        singleton_state = Singleton.get_state()
        todo = list(enumerate(job_overrides))
        running, returns = {}, [None] * len(job_overrides)
        failed = deadline = None
        with ForwardSignals(lambda: list(executor._processes)) as forward:
            # the same workers as joblib.Parallel's, with its limits on the threads of OpenMP, MKL, ... per worker
            env = backend._prepare_worker_env(n_jobs)
            executor = get_reusable_executor(max_workers=n_jobs, env=env, initializer=idle_worker)
            while running or (todo and forward.received is None and failed is None):
                while todo and len(running) < n_jobs and forward.received is None and failed is None:
                    idx, overrides = todo.pop(0)
                    job = (initial_job_idx + idx, overrides, self.hydra_context, self.config, self.task_function)
                    running[executor.submit(joblib_core.execute_job, *job, singleton_state)] = idx
                if (forward.received or failed) and deadline is None:
                    deadline = time.monotonic() + STOP_TIMEOUT_S
                if deadline is not None and time.monotonic() > deadline:
                    break  # what still runs is killed
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    returns[running.pop(future)] = future
                    if future.exception() is not None and failed is None and forward.received is None:
                        # a job ended by a signal of its own, or its worker died: stop the other jobs too (as
                        # for a signal to the command), then raise its error. After a signal to the command
                        # the jobs end with Interrupted: they have been stopped already, with that signal
                        failed = future
                        send(executor._processes, signal.SIGTERM)
            if forward.received or failed:
                executor.shutdown(wait=True, kill_workers=True)  # its thread's clean-up done before the last line
            # else the workers stay for the next batch of jobs (Optuna's); idle for 10 s, or at exit, they end
            if forward.received is not None:
                stopped(forward.received, str(sweep_dir))  # a second signal meanwhile still kills at once
        if failed is not None:
            end_process_tree()
            failed.result()  # raises the job's error
        return [future.result() for future in returns]


class LocalLauncher(submitit_launcher.LocalLauncher):
    """hydra-submitit-launcher's local launcher (a controller process per job, which starts the job's
    process), its jobs stopped with the command."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        def controllers() -> list[int]:
            return [pid for pid, parent in parents().items() if parent == os.getpid()]

        def jobs() -> list[int]:  # the controllers' children (not what a job started: its DataLoader workers)
            ours = controllers()
            return [pid for pid, parent in parents().items() if parent in ours]

        with ForwardSignals(jobs, interrupt=True) as forward:
            try:
                return super().launch(job_overrides, initial_job_idx)
            except SweepStopped:
                pass
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while controllers() and time.monotonic() < deadline:  # each ends when its job has
                time.sleep(0.1)
            stopped(forward.received, str(self.config.hydra.sweep.dir))


class UseCnnstudyLaunchers(Callback):
    """Before a sweep starts: the launcher config's class, if Hydra's joblib or submitit local launcher, is
    replaced by cnnstudy's (the same, with jobs stopped with the command)."""

    REPLACEMENTS = {
        "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": "ParallelLauncher",
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": "LocalLauncher",
    }

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        launcher = config.hydra.launcher
        if launcher._target_ in self.REPLACEMENTS:
            with read_write(launcher):
                launcher._target_ = f"hydra_plugins.cnnstudy_launchers.{self.REPLACEMENTS[launcher._target_]}"
