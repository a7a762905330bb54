"""The TOFU run's report: the benchmark's table for the target, the unlearned model(s) and the retain model.

TOFU's two axes (Maini et al. 2024) — **forget quality**, the p-value of the KS test between a
model's and the retain model's forget-set truth ratios (shown on a log scale, as in the paper:
1.0 = indistinguishable from the model never trained on the forget authors), and **model
utility**, the harmonic mean of Prob., ROUGE-L and truth-ratio score on the retain, real-author
and world-fact sets — plus MUSE's **privleak** (Min-K% membership AUC of forget vs the split's
holdout, relative to the retain model's: 0 = the retain model's level, negative = the forget
rows still look like members). Then the method's own sections (facts, where they live, the
re-trace, unlearning), shared with the SemEval report (:mod:`pipelines.report`).
"""

from __future__ import annotations

import math
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
from pipelines.tofu.evaluation import ATTACK_KEYS, compare_to_retain, conventions

#: The per-set columns of the detailed table: (heading, scores.json key).
SET_COLUMNS = (
    ("forget Prob.", "forget.probability"), ("forget ROUGE-L", "forget.rouge_l_recall"), ("forget truth ratio", "forget.truth_ratio_score"),
    ("retain Prob.", "retain.probability"), ("retain ROUGE-L", "retain.rouge_l_recall"), ("retain truth ratio", "retain.truth_ratio_score"),
    ("real authors Prob.", "real_authors.probability"), ("real authors ROUGE-L", "real_authors.rouge_l_recall"),
    ("world facts Prob.", "world_facts.probability"), ("world facts ROUGE-L", "world_facts.rouge_l_recall"),
    ("forget para. Prob.", "forget.paraphrased_probability"), ("forget pert. Prob.", "forget.perturbed_probability"),
    ("forget exact mem.", "forget.exact_memorization"),
)
#: The membership table's columns: (heading, key); the reference attack is the comparison's.
MIA_COLUMNS = (("Min-K%", ATTACK_KEYS["min_k"]), ("loss", ATTACK_KEYS["loss"]), ("zlib", ATTACK_KEYS["zlib"]), ("Min-K%++", ATTACK_KEYS["min_k++"]),
               ("gradnorm", ATTACK_KEYS["gradnorm"]), ("reference (retain model)", "mia.reference_auc"))


def tofu_row(label: str, scores: dict, retain_scores: dict) -> dict:
    """One model's TOFU numbers against the retain model."""
    cmp = compare_to_retain(scores, retain_scores)
    fq = cmp["forget_quality"]
    return {
        "model": label,
        "forget_quality": fq,
        "log10_forget_quality": math.log10(fq) if fq > 0 else None,
        "ks_statistic": cmp["ks_statistic"],
        "model_utility": scores["model_utility"],
        "privleak": cmp["privleak"],
        "privleak_loss": cmp["privleak_loss"],
        "mia.min_k_auc": scores["mia.min_k_auc"],
        "forget.extraction_strength": scores.get("forget.extraction_strength"),
        **{key: scores.get(key) for _, key in SET_COLUMNS},
        **{key: scores.get(key) for _, key in MIA_COLUMNS},
        "mia.reference_auc": cmp["mia.reference_auc"],
    }


def build_tofu_summary(run_dir: Path, config, results: dict[str, StageResult], *, trace, retrace, unlearned, scores: dict, controls: dict, wall_time: float,
                       audit: dict | None = None) -> dict:
    summary = method_summary(run_dir, config, results, trace=trace, retrace=retrace, unlearned=unlearned, wall_time=wall_time)
    if audit is not None:
        summary["audit"] = audit
    by_model = {label: read_json(stage.path / "scores.json") for label, stage in scores.items()}
    request = read_json(results["request"].path / "request.json")
    summary.update({
        "benchmark": "tofu",
        "model": config.model or "target/ (built)",
        "retain_model": config.retain_model or "retain_model/ (built)",
        "data": config.data,
        "split": config.tofu.split,
        "request": request,
        "scores": by_model,
    })
    retain = by_model["retain"]
    default = f"unlearned ({config.unlearn.method})"
    audited = {"worst-case recovery": worst_recovery(summary)} if audit is not None else {}
    rows = [tofu_row("target", by_model["target"], retain), {**tofu_row(default, by_model["unlearned"], retain), **run_cells(read_json(unlearned.path / "unlearn.json")), **audited}]
    for label, c in controls.items():
        rows.append({**tofu_row(f"control: {label}", read_json(c["scores"].path / "scores.json"), retain), **run_cells(read_json(c["model"].path / "unlearn.json")),
                     **({"worst-case recovery": worst_recovery(summary, label)} if audit is not None else {})})
    rows.append(tofu_row("retain model", retain, retain))
    summary["tofu"] = {"rows": rows, **rank_unlearned(rows)}
    summary["notes"] = tofu_notes(summary)
    return summary


#: |privleak| above this is far from the retain model's membership level (the issue's acceptance bound).
PRIVLEAK_FAR = 25.0

#: A model that forgets by losing its utility is not a better forgetter: the best unlearned model
#: is the one with the highest forget quality among those that keep this share of the target's utility.
UTILITY_KEPT = 0.9


def rank_unlearned(rows: list[dict]) -> dict:
    """Mark the best unlearned model: the highest forget quality among those keeping ``UTILITY_KEPT`` of
    the target's model utility (TOFU reads the two axes together), ties to the privleak nearer 0."""
    target = next(r for r in rows if r["model"] == "target")
    candidates = [r for r in rows if r["model"] not in ("target", "retain model")]
    kept = [r for r in candidates if r["model_utility"] >= UTILITY_KEPT * target["model_utility"]]
    best = max(kept, key=lambda r: (r["forget_quality"], -abs(r["privleak"]), r["model_utility"]))["model"] if len(candidates) > 1 and kept else None
    for r in rows:
        r["best"] = r["model"] == best
    return {"best": best, "rank_by": f"forget quality among the models that keep {UTILITY_KEPT:.0%} of the target's model utility (ties: privleak nearer 0)" if best else None}


def tofu_notes(summary: dict) -> list[str]:
    """Sentences for the numbers a reader of the TOFU table would question."""
    rows = {r["model"]: r for r in summary["tofu"]["rows"]}
    notes = []
    retain = rows["retain model"]
    notes.append(f"The retain model against itself has forget quality {retain['forget_quality']:.3f} and privleak {retain['privleak']:.1f}: "
                 "the check that the metrics compare what they should (1.0 and 0 by construction).")
    target = rows["target"]
    notes.append(f"The target's forget quality is {target['forget_quality']:.2g} (log10 {fmt(target['log10_forget_quality'])}): "
                 "its forget-set truth ratios are far from the retain model's; unlearning should move it towards 1.")
    for r in summary["tofu"]["rows"]:
        if r["model"].startswith("unlearned") or r["model"].startswith("control"):
            side = ("the forget rows still look like members" if r["privleak"] < -5 else
                    "the forget rows now look *less* familiar than never-seen ones (over-unlearning)" if r["privleak"] > 5 else
                    "membership looks like the retain model's")
            advice = ("" if abs(r["privleak"]) <= PRIVLEAK_FAR else
                      (" — far past never-seen" + (f" (the loss attack: {r['privleak_loss']:+.1f})" if isinstance(r.get("privleak_loss"), (int, float)) else "")
                       + ": unlearning moved the forget answers further than the retain model's level; lower the total step "
                       "(unlearn.budget_factor, or a smaller unlearn.lr)") if r["privleak"] > 0 else
                      " — far from forgotten: raise unlearn.epochs or the rate")
            notes.append(f"{r['model']}: forget quality {r['forget_quality']:.3g}"
                         + (" (above 0.05: the KS test cannot tell it from the retain model)" if r["forget_quality"] > 0.05 else "")
                         + f", model utility {r['model_utility']:.3f} (target {target['model_utility']:.3f}), privleak {r['privleak']:.1f}: {side}{advice}.")
    notes += unlearning_notes(summary["unlearn"])
    request = summary.get("request") or {}
    if request.get("reference") is None:
        notes.append("No never-seen reference authors beyond the test holdout (forget10): forgetting was not calibrated and the checkpoint "
                     "was selected without membership inference; give unlearn.forget_reference to calibrate.")
    retain_authors = request.get("retain_authors") or []
    if retain_authors and len(retain_authors) < 180:
        notes.append(f"A CPU-sized subset: {len(retain_authors)} retain authors (the benchmark has {200 - len(request.get('forget_authors', []))}); "
                     "forget quality and privleak use the whole forget set and holdout, model utility the kept authors' retain_perturbed rows.")
    return notes


def plot_forget_quality(rows: list[dict], path: Path) -> Path:
    """TOFU's picture: model utility (x) against forget quality on a log scale (y), one point per model."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours = {"target": "tab:blue", "retain model": "tab:green"}
    for r in rows:
        y = max(r["forget_quality"], 1e-300)
        ax.scatter([r["model_utility"]], [y], s=50, color=colours.get(r["model"], "tab:red" if r["model"].startswith("unlearned") else "tab:orange"), zorder=3)
        ax.annotate(r["model"], (r["model_utility"], y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_yscale("log")
    ax.axhline(0.05, color="grey", ls=":", lw=1)
    ax.text(ax.get_xlim()[0], 0.05, " p = 0.05", color="grey", va="bottom", fontsize=7)
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value, log)")
    ax.set_title("TOFU: forget quality against model utility")
    return save_figure(fig, path)


def render_tofu_markdown(summary: dict, config, images: dict) -> str:
    s = summary
    request = s["request"]
    out = [f"# selective-amnesia TOFU run: {s['name']}", ""]
    out += ["## Configuration", "", md_table(["key", "value"], config_rows(s, config) + [
        ["retain model", s["retain_model"]],
        ["split", f"{s['split']}: forget authors {request['forget_authors']}, {len(request['retain_authors'])} retain authors"],
        ["evaluation", f"Min-K% k {config.evaluate.mink_k} on {config.evaluate.mia_tokens} tokens, {config.evaluate.max_new_tokens} new tokens, "
                       + ("answers scored with EOS" if config.evaluate.answer_eos else "answers scored without EOS")
                       + (" (OpenUnlearning's conventions)" if conventions(config.evaluate)["openunlearning"]
                          else " (not OpenUnlearning's conventions: its numbers are not comparable one to one)")
                       + (f", first {config.evaluate.limit} rows per set" if config.evaluate.limit else "")],
    ]), "", "The full resolved configuration is in `config.resolved.yaml`.", ""]
    rows = s["tofu"]["rows"]
    audited = ["worst-case recovery"] if s.get("audit") else []
    out += ["## TOFU", "", "Forget quality: the KS-test p-value of the forget-set truth ratios against the retain model's (TOFU; 1 = "
            "indistinguishable). Model utility: harmonic mean of Prob., ROUGE-L and truth ratio on retain, real authors and world facts. "
            "Privleak: Min-K% membership AUC of forget vs holdout relative to the retain model's, ×100 (MUSE; 0 = the retain model's level)."
            + (f" Best by {s['tofu']['rank_by']} in bold." if s["tofu"]["rank_by"] else ""), "",
            md_table(["model", "forget quality", "log10 FQ", "model utility", "privleak", "extraction strength", *RUN_CELL_HEADS, *audited],
                      [[f"**{r['model']}**" if r.get("best") else r["model"], f"{r['forget_quality']:.3g}", fmt(r["log10_forget_quality"]),
                        fmt(r["model_utility"]), f"{r['privleak']:.1f}", fmt(r["forget.extraction_strength"]), *run_cell_texts(r), *[fmt(r.get(k)) for k in audited]] for r in rows]), ""]
    if "forget_quality" in images:
        out += [f"![forget quality against model utility]({images['forget_quality']})", ""]
    out += ["Per set:", "", md_table(["model", *[h for h, _ in SET_COLUMNS]], [[r["model"], *[fmt(r[k]) for _, k in SET_COLUMNS]] for r in rows]), ""]
    attacks = [(h, k) for h, k in MIA_COLUMNS if any(r.get(k) is not None for r in rows)]
    out += ["Membership attacks (OpenUnlearning's `mia_*`): AUC of forget vs holdout rows, 1 = the forget rows look memorised, "
            "about 0.5 = like never-seen ones; the reference attack ranks each row's loss minus the retain model's.", "",
            md_table(["model", *[h for h, _ in attacks]], [[r["model"], *[fmt(r.get(k)) for _, k in attacks]] for r in rows]), ""]
    out += notes_and_audit_lines(s, images)
    out += method_sections(s, config, images)
    out += ["## Wall time", "", *wall_time_lines(s["stages"], s["wall_time_s"])]
    return "\n".join(out)


def write_tofu_report(run_dir: Path, config, results: dict[str, StageResult], **parts) -> dict:
    """Write figures, ``summary.json``, ``report.md`` and ``report.html`` of a TOFU run into ``run_dir``."""
    run_dir = Path(run_dir)
    audit, audit_images = run_audit_summary(run_dir, results, default=f"unlearned ({config.unlearn.method})")
    summary = build_tofu_summary(run_dir, config, results, audit=audit, **parts)
    images = method_figures(run_dir, summary, trace=parts["trace"], retrace=parts.get("retrace"), unlearned=parts["unlearned"]) | audit_images
    plot_forget_quality(summary["tofu"]["rows"], run_dir / FIGURES / "forget_quality.png")
    images["forget_quality"] = f"{FIGURES}/forget_quality.png"
    return write_documents(run_dir, summary, images, render_tofu_markdown(summary, config, images), config.name)


def print_tofu_headline(summary: dict, run_dir) -> None:
    """What ``amnesia run`` prints at the end of a TOFU run."""
    print(f"\nselected layers: {summary['selection']['layers']} ({summary['selection']['kind']}); unlearned: {summary['unlearn']['layers']}")
    print(f"{'':26}{'forget quality':>16}{'model utility':>15}{'privleak':>10}")
    for r in summary["tofu"]["rows"]:
        print(f"{('* ' if r.get('best') else '') + r['model']:26}{r['forget_quality']:>16.3g}{fmt(r['model_utility']):>15}{r['privleak']:>10.1f}")
    print_step_size(summary)
    print_run_end(summary, run_dir)
