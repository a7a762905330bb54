"""The MUSE run's report: MUSE's table for the target, the unlearned model(s) and the retain model.

MUSE (Shi et al. 2024) reads four numbers per model: **VerbMem** on forget (C1, ROUGE-L F1 × 100
of the continuation of forget passages), **KnowMem** on forget (C2) and on retain (C4, utility),
and **PrivLeak** (C3: Min-K% membership AUC of forget vs never-seen documents relative to the
retain model's, × 100; 0 = the retain model's level, negative = the forget documents still look
like members, positive = they look *less* familiar than never-seen ones). Its criteria: VerbMem
and KnowMem on forget no higher than the retain model's, PrivLeak near 0 (the paper reads
[−5 %, 5 %] as no leak), KnowMem on retain kept. Then the method's own sections (facts, where
they live, the re-trace, unlearning), shared with the other reports (:mod:`pipelines.report`).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.audit import notes_and_audit_lines, print_run_end, run_audit_summary, worst_recovery
from pipelines.report import (
    FIGURES,
    RUN_CELL_HEADS,
    config_rows,
    fmt,
    md_table,
    method_figures,
    method_sections,
    method_summary,
    print_step_size,
    pyplot,
    read_json,
    run_cell_texts,
    run_cells,
    save_figure,
    unlearning_notes,
    wall_time_lines,
    write_documents,
)
from pipelines.stages import StageResult

from .evaluation import compare_to_retain
from .folds import MODES as STEP_MODES

#: |PrivLeak| within this is no leak (MUSE reads [−5 %, 5 %] so).
PRIVLEAK_NEAR = 5.0
#: The share of the target's KnowMem on retain a model must keep to count as utility preserved.
UTILITY_KEPT = 0.9
#: A forget score within this many points (ROUGE-L F1 × 100) above the retain model's counts as at its level.
FLOOR_SLACK = 5.0


def muse_row(label: str, scores: dict, retain: dict, target: dict) -> dict:
    """One model's MUSE numbers against the retain model (PrivLeak) and the target (utility kept), with MUSE's criteria."""
    cmp = compare_to_retain(scores, retain)
    kept = scores["knowmem_r"] / target["knowmem_r"] if target.get("knowmem_r") else None
    return {
        "model": label,
        "verbmem_f": scores["verbmem_f"], "knowmem_f": scores["knowmem_f"], "knowmem_r": scores["knowmem_r"],
        "privleak": cmp["privleak"], "privleak_auc": scores["privleak_auc"], "utility_kept": kept,
        "criteria": {
            "no verbatim memorization": scores["verbmem_f"] <= retain["verbmem_f"] + FLOOR_SLACK,
            "no knowledge memorization": scores["knowmem_f"] <= retain["knowmem_f"] + FLOOR_SLACK,
            "no privacy leak": abs(cmp["privleak"]) <= PRIVLEAK_NEAR,
            "utility preserved": kept is not None and kept >= UTILITY_KEPT,
        },
    }


def step_rows(steps: dict[str, list[dict]], retain: dict, target: dict) -> dict[str, list[dict]]:
    """C5/C6 (:mod:`pipelines.muse.folds`): per mode, each step's MUSE row, its rows and what the unlearning did."""
    out = {}
    for mode, records in steps.items():
        out[mode] = []
        for r in records:
            row = muse_row(f"step {r['step']}", read_json(r["scores"].path / "scores.json"), retain, target)
            out[mode].append({**row, "step": r["step"], "stage": r["unlearned"].name, "from": r["from"], "documents": r["documents"], "questions": r["questions"],
                              "requested": r["requested"], "given": r["given"],
                              **{k: r.get(k) for k in ("verbmem_requested", "knowmem_requested", "verbmem_not_requested", "knowmem_not_requested")},
                              **run_cells(read_json(r["unlearned"].path / "unlearn.json"))})
    return out


def build_muse_summary(run_dir: Path, config, results: dict[str, StageResult], *, trace, retrace, unlearned, scores: dict, controls: dict,
                       wall_time: float, audit: dict | None = None, steps: dict | None = None) -> dict:
    summary = method_summary(run_dir, config, results, trace=trace, retrace=retrace, unlearned=unlearned, wall_time=wall_time)
    if audit is not None:
        summary["audit"] = audit
    by_model = {label: read_json(stage.path / "scores.json") for label, stage in scores.items()}
    summary.update({"benchmark": "muse", "model": config.model or "target/ (built)", "retain_model": config.retain_model or "retain_model/ (built)", "data": config.data,
                    "request": read_json(results["request"].path / "request.json"), "scores": by_model})
    retain, target = by_model["retain"], by_model["target"]
    audited = {"worst-case recovery": worst_recovery(summary)} if audit is not None else {}
    rows = [muse_row("target", target, retain, target),
            {**muse_row(f"unlearned ({config.unlearn.method})", by_model["unlearned"], retain, target), **run_cells(read_json(unlearned.path / "unlearn.json")), **audited}]
    for label, c in controls.items():
        rows.append({**muse_row(f"control: {label}", read_json(c["scores"].path / "scores.json"), retain, target), **run_cells(read_json(c["model"].path / "unlearn.json")),
                     **({"worst-case recovery": worst_recovery(summary, label)} if audit is not None else {})})
    rows.append(muse_row("retain model", retain, retain, target))
    summary["muse"] = {"rows": rows, "steps": step_rows(steps or {}, retain, target)}
    summary["notes"] = muse_notes(summary)
    return summary


def muse_notes(summary: dict) -> list[str]:
    """Sentences for the numbers a reader of the MUSE table would question."""
    rows = {r["model"]: r for r in summary["muse"]["rows"]}
    retain, target = rows["retain model"], rows["target"]
    notes = [f"The retain model (never trained on the forget documents) reads VerbMem {retain['verbmem_f']:.1f} and KnowMem on forget {retain['knowmem_f']:.1f}: "
             f"the floor an unlearned model should reach; its PrivLeak against itself is {retain['privleak']:.1f} by construction. "
             f"The target reads {target['verbmem_f']:.1f} and {target['knowmem_f']:.1f} (PrivLeak {target['privleak']:.1f})."]
    for r in summary["muse"]["rows"]:
        if r["model"].startswith(("unlearned", "control")):
            missed = [name for name, ok in r["criteria"].items() if not ok]
            side = ("the forget documents still look like members" if r["privleak"] < -PRIVLEAK_NEAR else
                    "the forget documents look *less* familiar than never-seen ones (over-unlearning: lower the total step, unlearn.budget_factor)"
                    if r["privleak"] > PRIVLEAK_NEAR else "membership looks like the retain model's")
            notes.append(f"{r['model']}: VerbMem {r['verbmem_f']:.1f}, KnowMem forget {r['knowmem_f']:.1f}, retain {r['knowmem_r']:.1f} "
                         f"({fmt(r['utility_kept'])} of the target's), PrivLeak {r['privleak']:.1f}: {side}; "
                         + (f"fails {len(missed)} of MUSE's four criteria ({'; '.join(missed)})." if missed else "meets MUSE's four criteria."))
    for mode, step_list in summary["muse"].get("steps", {}).items():
        first, last = step_list[0], step_list[-1]
        notes.append(f"{STEP_MODES[mode]}: over {len(step_list)} steps KnowMem on retain went {first['knowmem_r']:.1f} → {last['knowmem_r']:.1f} "
                     f"({fmt(last['utility_kept'])} of the target's after the last), VerbMem on forget {first['verbmem_f']:.1f} → {last['verbmem_f']:.1f}, "
                     f"PrivLeak {first['privleak']:.1f} → {last['privleak']:.1f}.")
    notes += unlearning_notes(summary["unlearn"])
    req = summary["request"]
    if req["muse"]["mini"]:
        notes.append(f"A CPU-sized MUSE: {req['documents']['forget']} forget excerpts of MUSE-News' VerbMem passages ({req['muse']['prompt_words']} + "
                     f"{req['muse']['continuation_words']} words), {req['questions']['forget']} + {req['questions']['retain']} KnowMem questions with "
                     f"{req['questions']['icl_examples']} in-context examples, {req['documents']['holdout']} never-seen excerpts for PrivLeak; the target learned the "
                     "KnowMem prompts themselves (docs/muse.md). The numbers are MUSE's metrics on these rows, not MUSE-News' leaderboard.")
    return notes


def rows_text(req: dict) -> str:
    """The configuration table's account of the rows a run read."""
    d, q = req["documents"], req["questions"]
    if req["muse"]["mini"]:
        return (f"CPU-sized: {d['forget']} forget / {d['retain']} retain / {d['holdout']} never-seen / {d['reference']} reference excerpts; "
                f"{q['forget']} + {q['retain']} KnowMem questions")
    return (f"MUSE's own: {d['forget']} forget / {d['retain']} retain documents of {req['muse']['chunk_words']} words (raw/forget, raw/retain1), "
            f"{d['reference']} reference documents (raw/holdout without PrivLeak's holdout); the authors' test files")


def plot_muse(rows: list[dict], path: Path) -> Path:
    """MUSE's numbers per model as horizontal bars (readable with every method of ``--control methods``):
    VerbMem and KnowMem on forget beside KnowMem on retain (left), PrivLeak with MUSE's ±5 band (right)."""
    import numpy as np

    plt = pyplot()
    labels = [r["model"].replace("control: ", "") for r in rows]
    y = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 1.2 + 0.42 * len(rows)), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    for i, (key, name, colour) in enumerate((("verbmem_f", "VerbMem forget (C1)", "tab:red"), ("knowmem_f", "KnowMem forget (C2)", "tab:orange"),
                                             ("knowmem_r", "KnowMem retain (C4)", "tab:green"))):
        left.barh(y + (i - 1) * 0.27, [r[key] for r in rows], height=0.27, color=colour, label=name)
    left.set_yticks(y, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlim(0, 100)
    left.set_xlabel("ROUGE-L F1 × 100 (forget: lower is better; retain: higher)")
    left.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    privleak = [max(-100.0, min(100.0, r["privleak"])) for r in rows]
    right.barh(y, privleak, height=0.6, color=["tab:green" if abs(v) <= PRIVLEAK_NEAR else "tab:grey" for v in privleak])
    right.axvspan(-PRIVLEAK_NEAR, PRIVLEAK_NEAR, color="tab:green", alpha=0.12)
    right.axvline(0, color="black", lw=0.8)
    right.set_xlim(-105, 105)
    right.set_xlabel("PrivLeak (C3; 0 = the retain model, band ±5)")
    fig.suptitle("MUSE per model", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


STEP_TEXT = {"scal": "step k unlearns the forget rows of folds 1..k, each step from the target",
             "sust": "step k unlearns fold k from the model step k−1 left, step 1 from the target"}


def step_lines(summary: dict, images: dict) -> list[str]:
    """The report's C5/C6 section: one table per mode, the figure; or a line saying how to run them."""
    steps = summary["muse"].get("steps") or {}
    if not steps:
        return ["C5 scalability and C6 sustainability were not run (`muse.scalability=true`, `muse.sustainability=true`; docs/muse.md).", ""]
    out = ["## C5 scalability and C6 sustainability", "",
           "MUSE's last two tests: the same recipe on growing forget sets (C5) and on disjoint ones in a row (C6), C1–C4 on the same test rows after "
           "every step. *Requested*: VerbMem / KnowMem on forget over the forget rows requested so far; *not yet*: over the forget training rows "
           "not requested yet (what a step forgot beyond its request; CPU-sized run only).", ""]
    for mode, rows in steps.items():
        out += [f"**{STEP_MODES[mode]}** ({STEP_TEXT[mode]}{'; MUSE’s own ' + mode + ' forget sets' if rows[0]['given'] else ''}):", "",
                md_table(["step", "rows (documents + questions)", "from", "VerbMem forget", "KnowMem forget", "VerbMem requested", "KnowMem requested",
                          "VerbMem not yet", "KnowMem retain", "utility kept", "PrivLeak", "lr", *RUN_CELL_HEADS[:2]],
                         [[r["step"], f"{r['documents']} + {r['questions']}", f"`{r['from']}`", fmt(r["verbmem_f"]), fmt(r["knowmem_f"]),
                           fmt(r["verbmem_requested"]), fmt(r["knowmem_requested"]), fmt(r["verbmem_not_requested"]), fmt(r["knowmem_r"]),
                           fmt(r["utility_kept"]), f"{r['privleak']:.1f}", f"{r['lr']:.2g}" if r.get("lr") else "–", *run_cell_texts(r)[:2]] for r in rows]), ""]
    if "muse_steps" in images:
        out += [f"![C5 and C6 per step]({images['muse_steps']})", ""]
    return out


def plot_steps(steps: dict[str, list[dict]], path: Path, *, target: dict, retain: dict) -> Path:
    """C5 / C6 as curves over the steps: utility (KnowMem on retain) and what is forgotten (VerbMem,
    KnowMem on forget), with the target's KnowMem on retain and the retain model's VerbMem as lines."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(steps), figsize=(5 * len(steps), 3.6), squeeze=False, sharey=True)
    for ax, (mode, rows) in zip(axes[0], steps.items()):
        x = [r["step"] for r in rows]
        for key, name, colour, style in (("knowmem_r", "KnowMem retain (C4)", "tab:green", "-"), ("verbmem_f", "VerbMem forget (C1)", "tab:red", "-"),
                                         ("knowmem_f", "KnowMem forget (C2)", "tab:orange", "-"), ("verbmem_requested", "VerbMem, rows requested", "tab:red", ":")):
            if all(r.get(key) is not None for r in rows):
                ax.plot(x, [r[key] for r in rows], style, marker="o", color=colour, label=name)
        ax.axhline(target["knowmem_r"], color="tab:green", lw=0.8, ls="--", label="target's KnowMem retain")
        ax.axhline(retain["verbmem_f"], color="tab:red", lw=0.8, ls="--", label="retain model's VerbMem forget (the floor)")
        ax.set_title(STEP_MODES[mode], fontsize=10)
        ax.set_xticks(x)
        ax.set_xlabel("step (forget sets requested)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ROUGE-L F1 × 100")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def _check(ok: bool) -> str:
    return "yes" if ok else "no"


def render_muse_markdown(summary: dict, config, images: dict) -> str:
    s = summary
    req = s["request"]
    out = [f"# selective-amnesia MUSE run: {s['name']}", ""]
    out += ["## Configuration", "", md_table(["key", "value"], config_rows(s, config) + [
        ["retain model", s["retain_model"]],
        ["rows", rows_text(req)],
        ["evaluation", f"MUSE's eval.py: VerbMem {config.evaluate.verbmem_max_new_tokens} new tokens, KnowMem {config.evaluate.knowmem_max_new_tokens}, "
                       f"Min-{config.evaluate.mink_k:.0%} PrivLeak against the retain model's AUC"],
    ]), "", "The full resolved configuration is in `config.resolved.yaml`.", ""]
    rows = s["muse"]["rows"]
    crit = list(rows[0]["criteria"])
    audited = ["worst-case recovery"] if s.get("audit") else []
    out += ["## MUSE", "",
            "VerbMem (C1) and KnowMem (C2 forget, C4 retain): ROUGE-L F1 × 100. PrivLeak (C3): Min-K% membership AUC of forget vs never-seen documents "
            "relative to the retain model's, × 100 (0 = the retain model's level). Utility kept: KnowMem on retain over the target's.", "",
            md_table(["model", "VerbMem forget", "KnowMem forget", "KnowMem retain", "utility kept", "PrivLeak", "AUC", *RUN_CELL_HEADS, *audited],
                     [[r["model"], fmt(r["verbmem_f"]), fmt(r["knowmem_f"]), fmt(r["knowmem_r"]), fmt(r["utility_kept"]), f"{r['privleak']:.1f}",
                       fmt(r["privleak_auc"]), *run_cell_texts(r), *[fmt(r.get(k)) for k in audited]] for r in rows]), ""]
    if "muse" in images:
        out += [f"![MUSE per model]({images['muse']})", ""]
    out += [f"MUSE's criteria (forget scores at most {FLOOR_SLACK:g} points above the retain model's; |PrivLeak| ≤ {PRIVLEAK_NEAR:g}; "
            f"KnowMem on retain ≥ {UTILITY_KEPT:.0%} of the target's):", "",
            md_table(["model", *crit], [[r["model"], *[_check(r["criteria"][c]) for c in crit]] for r in rows if r["model"] not in ("target", "retain model")]), ""]
    out += step_lines(s, images)
    out += notes_and_audit_lines(s, images)
    out += method_sections(s, config, images)
    out += ["## Wall time", "", *wall_time_lines(s["stages"], s["wall_time_s"])]
    return "\n".join(out)


def write_muse_report(run_dir: Path, config, results: dict[str, StageResult], **parts) -> dict:
    """Write figures, ``summary.json``, ``report.md`` and ``report.html`` of a MUSE run into ``run_dir``."""
    run_dir = Path(run_dir)
    audit, audit_images = run_audit_summary(run_dir, results, default=f"unlearned ({config.unlearn.method})")
    summary = build_muse_summary(run_dir, config, results, audit=audit, **parts)
    images = method_figures(run_dir, summary, trace=parts["trace"], retrace=parts.get("retrace"), unlearned=parts["unlearned"]) | audit_images
    plot_muse(summary["muse"]["rows"], run_dir / FIGURES / "muse.png")
    images["muse"] = f"{FIGURES}/muse.png"
    if summary["muse"]["steps"]:
        by_model = {r["model"]: r for r in summary["muse"]["rows"]}
        plot_steps(summary["muse"]["steps"], run_dir / FIGURES / "muse_steps.png", target=by_model["target"], retain=by_model["retain model"])
        images["muse_steps"] = f"{FIGURES}/muse_steps.png"
    return write_documents(run_dir, summary, images, render_muse_markdown(summary, config, images), config.name)


def print_muse_headline(summary: dict, run_dir) -> None:
    """What ``amnesia run`` prints at the end of a MUSE run."""
    print(f"\nselected layers: {summary['selection']['layers']} ({summary['selection']['kind']}); unlearned: {summary['unlearn']['layers']}")
    print(f"{'':26}{'VerbMem f':>10}{'KnowMem f':>10}{'KnowMem r':>10}{'PrivLeak':>10}")
    for r in summary["muse"]["rows"]:
        print(f"{r['model']:26}{r['verbmem_f']:>10.1f}{r['knowmem_f']:>10.1f}{r['knowmem_r']:>10.1f}{r['privleak']:>10.1f}")
    for mode, rows in summary["muse"].get("steps", {}).items():
        for r in rows:
            print(f"{STEP_MODES[mode][:3] + ' ' + r['model']:26}{r['verbmem_f']:>10.1f}{r['knowmem_f']:>10.1f}{r['knowmem_r']:>10.1f}{r['privleak']:>10.1f}")
    print_step_size(summary)
    print_run_end(summary, run_dir)
