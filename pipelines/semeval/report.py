"""SemEval's report: the official scores before and after, the controls table, the notes, the headline.

Beside the sections every benchmark's report shares (:mod:`pipelines.report`: facts, the trace and
its figures, the selected layers, the re-trace, the unlearning with its step size, calibration and
checkpoint selection, wall times): the headline scores, every official key with its delta, MMLU
before and after (or why it was skipped), the controls ranked by the official final score, and
notes on the membership-inference and MMLU numbers a researcher would question; with the audit
stage, its section (:mod:`pipelines.audit`) and a worst-case recovery column in the controls table.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.audit import notes_and_audit_lines, print_run_end, run_audit_summary, worst_recovery
from pipelines.report import (
    RUN_CELL_HEADS,
    config_rows,
    dig,
    fmt,
    md_table,
    method_figures,
    method_notes,
    method_sections,
    method_summary,
    print_step_size,
    read_json,
    run_cell_texts,
    run_cells,
    sig,
    wall_time_lines,
    write_documents,
)
from pipelines.stages import StageResult
from unlearn.eval import compare

from .config import SemEvalRunConfig

HEADLINE = (
    ("forget regurgitation", ("forget-set", "overall-regurgitation-score")),
    ("forget knowledge", ("forget-set", "overall-knowledge-score")),
    ("retain regurgitation", ("retain-set", "overall-regurgitation-score")),
    ("retain knowledge", ("retain-set", "overall-knowledge-score")),
    ("MIA score", ("mia_final_score",)),
    ("MMLU", ("mmlu_average",)),
    ("task aggregate", ("harmonic-mean-task-aggregate",)),
    ("aggregate", ("aggregate-score",)),
)


def scores_table(before: dict, after: dict) -> tuple[list[str], list[list[str]]]:
    rows = [[r["metric"], r["key"], fmt(r["before"]), fmt(r["after"]), fmt(r["delta"], signed=True), r["better"]] for r in compare(before, after)]
    return ["metric", "key", "before", "after", "delta", "better"], rows


def mmlu_note(scores: dict) -> str:
    if scores.get("mmlu_average") is not None:
        return f"{scores['mmlu_average']:.3f}"
    notes = [w for w in scores.get("warnings", []) if "MMLU" in w]
    return "skipped (" + (notes[0] if notes else "not evaluated") + ")"


def build_summary(run_dir: Path, config: SemEvalRunConfig, results: dict[str, StageResult], *, trace, retrace, unlearned, before, after, controls, wall_time: float,
                  audit: dict | None = None) -> dict:
    scores_before = read_json(before.path / "scores.json")
    scores_after = read_json(after.path / "scores.json")
    summary = method_summary(run_dir, config, results, trace=trace, retrace=retrace, unlearned=unlearned, wall_time=wall_time)
    summary.update({"model": config.model or "target/ (built)", "data": config.data or "world/ (built)",
                    "scores_before": scores_before, "scores_after": scores_after, "comparison": compare(scores_before, scores_after)})
    if audit is not None:
        summary["audit"] = audit
    if controls:
        rows = []
        default = "traced" if config.control != "methods" else f"{config.unlearn.method} (default)"
        for label, c in {default: {"layers": unlearned.record["layers"], "method": config.unlearn.method, "scores": after, "model": unlearned}, **controls}.items():
            s = read_json(c["scores"].path / "scores.json")
            rows.append({"label": label, "method": c.get("method"), "layers": c["layers"], **run_cells(read_json(c["model"].path / "unlearn.json")),
                         **{name: dig(s, keys) for name, keys in HEADLINE}})
            if audit is not None:
                rows[-1]["worst-case recovery"] = worst_recovery(summary, None if label == default else label)
        scored = [r for r in rows if isinstance(r.get("aggregate"), (int, float)) and r["aggregate"] >= 0]
        best = max(scored, key=lambda r: r["aggregate"])["label"] if scored else None
        for r in rows:
            r["best"] = r["label"] == best
        summary["controls"] = {"mode": config.control, "rows": rows, "best": best, "rank_by": "aggregate-score (the official final score)"}
    summary["notes"] = explain(summary)
    return summary


def explain(summary: dict) -> list[str]:
    """Sentences for the numbers a researcher would question (shown in the terminal and the report)."""
    notes = []
    for when in ("before", "after"):
        scores = summary[f"scores_{when}"]
        mia = scores.get("mia") or {}
        auc, m, n = mia.get("auc"), mia.get("member_mean_nll"), mia.get("nonmember_mean_nll")
        if isinstance(auc, (int, float)) and mia.get("score") is not None and mia["score"] < 0.5:
            side = ("too little forgetting: forget documents are still more likely than never-seen ones" if auc > 0.5
                    else "too much forgetting: forget documents are now less likely than never-seen ones, which gives them away as well")
            notes.append(f"MIA score {when} unlearning is {mia['score']:.3f} (AUC {auc:.3f}): {side} "
                         f"(mean NLL per token: members {m:.3f}, non-members {n:.3f}).")
        mmlu = scores.get("mmlu") or {}
        if when == "after" and mmlu.get("mode") == "builtin":
            notes.append("MMLU is the package's built-in subset (5 test questions per subject, 285 in all; no local copy and no Hub): "
                         "within about ±0.06 of the full test, comparable before/after, not with published numbers.")
        if when == "after" and mmlu.get("mode") in (None, "off"):
            notes.append("MMLU was not scored (its source is off: evaluate.mmlu: off in the config, or --mmlu off), so the final aggregate-score is -1.")
        for warning in scores.get("warnings", []):
            if "below the threshold" in warning:
                notes.append(f"{warning[0].upper()}{warning[1:]} — {when} unlearning.")
    return notes + method_notes(summary)


def headline_rows(summary: dict) -> list[list[str]]:
    return [[name, fmt(dig(summary["scores_before"], keys)), fmt(dig(summary["scores_after"], keys))] for name, keys in HEADLINE]


def render_markdown(summary: dict, config: SemEvalRunConfig, images: dict) -> str:
    s = summary
    out = [f"# selective-amnesia run: {s['name']}", ""]
    out += ["## Configuration", "", md_table(["key", "value"], config_rows(s, config) + [
        ["evaluation", f"splits {config.evaluate.splits}, MMLU {config.evaluate.mmlu}"],
    ]), "", "The full resolved configuration is in `config.resolved.yaml`.", ""]
    out += method_sections(s, config, images)
    out += ["## Scores", "", md_table(["headline", "before", "after"], headline_rows(s)), ""]
    head, rows = scores_table(s["scores_before"], s["scores_after"])
    out += ["Official keys (SemEval-2025 Task 4):", "", md_table(head, rows), ""]
    out += [f"MMLU before: {mmlu_note(s['scores_before'])}; after: {mmlu_note(s['scores_after'])}.", ""]
    out += notes_and_audit_lines(s, images)
    if "controls" in s:
        c = s["controls"]
        audited = ["worst-case recovery"] if any("worst-case recovery" in r for r in c["rows"]) else []
        intro = ("The shared task's baselines on the same layers, budget, calibrated forget target and checkpoint-selection rule as the default."
                 if c["mode"] == "methods" else "The same unlearning with other layers: does the traced choice beat them?")
        intro += (" Each run measures its own step size (lr auto); *displacement to forget* is how far its weights must move for the"
                  " probed forget rows to reach never-seen text (docs/step-size.md) — the smaller, the more directly those weights hold the facts.")
        out += [f"## Controls ({c['mode']})", "", intro + f" Best by {c['rank_by']} in bold.", "",
                md_table(["run", "layers", "lr", "displacement to forget", *RUN_CELL_HEADS, *[n for n, _ in HEADLINE], *audited],
                          [[f"**{r['label']}**" if r.get("best") else r["label"], r["layers"], sig(r.get("lr")), sig(r.get("arrive_displacement")),
                            *run_cell_texts(r), *[fmt(r[n]) for n, _ in HEADLINE], *[fmt(r.get(n)) for n in audited]] for r in c["rows"]]), ""]
    out += ["## Wall time", "", *wall_time_lines(s["stages"], s["wall_time_s"])]
    return "\n".join(out)


def write_report(run_dir: Path, config: SemEvalRunConfig, results: dict[str, StageResult], **parts) -> dict:
    """Write figures, ``summary.json``, ``report.md`` and ``report.html`` into ``run_dir``."""
    run_dir = Path(run_dir)
    default = "traced" if config.control != "methods" else f"{config.unlearn.method} (default)"
    audit, audit_images = run_audit_summary(run_dir, results, default=default)
    summary = build_summary(run_dir, config, results, audit=audit, **parts)
    images = method_figures(run_dir, summary, trace=parts["trace"], retrace=parts.get("retrace"), unlearned=parts["unlearned"]) | audit_images
    return write_documents(run_dir, summary, images, render_markdown(summary, config, images), config.name)


def print_semeval_headline(summary: dict, run_dir) -> None:
    """What ``amnesia run`` prints at the end of a SemEval run: the headline scores, the step size, the kept step, the controls, the notes."""
    print(f"\nselected layers: {summary['selection']['layers']} ({summary['selection']['kind']}); unlearned: {summary['unlearn']['layers']}")
    print(f"{'':24}{'before':>10}{'after':>10}")
    for name, keys in HEADLINE:
        print(f"{name:24}{fmt(dig(summary['scores_before'], keys)):>10}{fmt(dig(summary['scores_after'], keys)):>10}")
    print_step_size(summary)
    validation = (summary.get("unlearn") or {}).get("validation")
    if validation and validation.get("best_step") is not None:
        print(f"\nkept step {validation['best_step']} of {summary['unlearn']['steps']} (best {validation['select_by']} on the validation part)"
              + ("; stopped early" if validation.get("stopped_early") else ""))
    controls = summary.get("controls")
    if controls:
        print(f"\ncontrols ({controls['mode']}), ranked by {controls['rank_by']}:")
        for row in sorted(controls["rows"], key=lambda r: -(r["aggregate"] if isinstance(r.get("aggregate"), (int, float)) else -1)):
            print(f"  {'*' if row.get('best') else ' '} {row['label']:<18} aggregate {fmt(row.get('aggregate')):>7}  task {fmt(row.get('task aggregate')):>7}  MIA {fmt(row.get('MIA score')):>7}"
                  + (f"  lr {row['lr']:.3g}" if isinstance(row.get("lr"), (int, float)) else "")
                  + (f"  displacement to forget {row['arrive_displacement']:.3g}" if isinstance(row.get("arrive_displacement"), (int, float)) else ""))
    print_run_end(summary, run_dir)
