"""What every benchmark's run report shares: ``summary.json``, ``report.md`` (images beside it) and a
self-contained ``report.html``.

The benchmark-independent sections and figures — config summary; kept/skipped facts; heatmaps
and AIE curves; the selected layers and why; the before/after trace comparison (AIE per layer,
target vs unlearned); the unlearning with its step size, training curves, calibration and kept
checkpoint; wall time per stage — the notes on them (:func:`method_notes`), the cells a methods
or controls table shows of each run (:func:`run_cells`) and the Markdown → HTML writer. Each
benchmark's report adds its scores around them (:mod:`pipelines.semeval.report`,
:mod:`pipelines.tofu.report`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from pipelines.stages import StageResult
from tracing.aggregation import layer_profile
from tracing.io import atomic_path, write_json, write_text

FIGURES = "figures"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def dig(d: dict, keys: tuple[str, ...]):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def sig(v) -> str:
    """Three significant digits (learning rates, displacements), ``–`` for none."""
    return f"{v:.3g}" if isinstance(v, (int, float)) else "–"


def fmt(v, signed=False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if round(v, 3) == 0:  # no "-0.000"
            v = 0.0
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return str(v)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def plot_trace_comparison(before: dict, after: dict, path: Path, *, kind: str, group: str, layers: list[int]) -> Path:
    """AIE per layer at ``group`` for ``kind``: target vs unlearned, selected layers shaded."""
    from tracing.plots import layer_axis

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for summary, label, colour in ((before, "target", "tab:blue"), (after, "unlearned", "tab:red")):
        y = layer_profile(summary, kind, group)
        ci = summary["aie"][kind][group]
        x = list(range(len(y)))
        ax.plot(x, y, marker="o", label=label, color=colour)
        if ci.get("ci_low") is not None:
            ax.fill_between(x, ci["ci_low"], ci["ci_high"], color=colour, alpha=0.15)
    for l in layers:
        ax.axvspan(l - 0.5, l + 0.5, color="grey", alpha=0.12, lw=0)
    layer_axis(ax, len(x))
    ax.set_xlabel("layer")
    ax.set_ylabel(f"AIE ({kind}, {group.replace('_', ' ')})")
    ax.set_title("Causal effect before and after unlearning (shaded: unlearned layers)")
    ax.legend()
    return save_figure(fig, path)


def plot_training_curves(history: list[dict], path: Path) -> Path | None:
    """CE_forget, CE_retain and α per logging step."""
    rows = [h for h in history if "ce_forget" in h]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    steps = [h["step"] for h in rows]
    ax.plot(steps, [h["ce_forget"] for h in rows], label="CE forget", color="tab:red")
    if any("ce_retain" in h for h in rows):
        ax.plot(steps, [h.get("ce_retain") for h in rows], label="CE retain", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    if any("alpha" in h for h in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, [h.get("alpha") for h in rows], label="α", color="tab:green", ls="--")
        ax2.set_ylabel("α")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title("Unlearning: losses and α")
    return save_figure(fig, path)


def plot_validation(validation: dict | None, path: Path) -> Path | None:
    """The validation scores per evaluation step (final proxy, task aggregate, MIA score), the kept step marked."""
    history = (validation or {}).get("history") or []
    if not history:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    steps = [h["step"] for h in history]
    for key, label, colour in (("final", "final proxy (task + MIA)/2", "black"), ("task", "task aggregate", "tab:blue"), ("mia_score", "MIA score", "tab:red"),
                               ("forget_knowledge", "forget knowledge", "tab:orange"), ("retain_knowledge", "retain knowledge", "tab:green")):
        ys = [h.get(key) for h in history]
        if any(isinstance(y, (int, float)) for y in ys):
            ax.plot(steps, [y if isinstance(y, (int, float)) else float("nan") for y in ys], marker="o", ms=3, label=label, color=colour,
                    lw=2 if key == "final" else 1, ls="-" if key in ("final", "task", "mia_score") else ":")
    if validation.get("best_step") is not None:
        ax.axvline(validation["best_step"], color="grey", ls="--", lw=1)
        ax.text(validation["best_step"], 0.02, " kept", color="grey", va="bottom", fontsize=8)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation score")
    ax.set_title("Validation during unlearning (checkpoint selection)")
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def run_cells(unlearn_json: dict) -> dict:
    """What a methods/controls table shows of one unlearning run (its ``unlearn.json``): the kept
    step, the steps, the probed rate and displacement, the wall time and the peak memory."""
    plan = unlearn_json.get("step_size") or {}
    return {"kept_step": (unlearn_json.get("validation") or {}).get("best_step"), "steps": unlearn_json.get("steps"),
            "lr": plan.get("lr"), "arrive_displacement": plan.get("arrive_displacement"),
            "wall_time_s": unlearn_json.get("wall_time_s"), "peak_memory_mb": (unlearn_json.get("peak_memory") or {}).get("mb")}


def run_cell_texts(r: dict) -> list[str]:
    """The table cells of :func:`run_cells`: kept step, wall time, peak memory."""
    return [f"{r.get('kept_step')}/{r.get('steps')}" if r.get("kept_step") else "–",
            f"{r['wall_time_s']:.0f}" if isinstance(r.get("wall_time_s"), (int, float)) else "–",
            f"{r['peak_memory_mb']:.0f}" if isinstance(r.get("peak_memory_mb"), (int, float)) else "–"]


RUN_CELL_HEADS = ["kept step", "wall time (s)", "peak memory (MB)"]


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def method_summary(run_dir: Path, config, results: dict[str, StageResult], *, trace, retrace, unlearned, wall_time: float) -> dict:
    """The benchmark-independent part of ``summary.json``: facts, trace, selection, unlearning, re-trace, stage times."""
    trace_json = read_json(trace.path / "trace.json")
    layers_json = read_json(trace.path / "layers.json")
    unlearn_json = read_json(unlearned.path / "unlearn.json")
    summary = {
        "schema": 1,
        "name": config.name,
        "run_dir": str(run_dir),
        "facts": trace_json["summary"].get("counts", {}),
        "trace": {
            "te": trace_json["summary"]["te"],
            "p_clean": trace_json["summary"]["p_clean"],
            "p_corrupt": trace_json["summary"]["p_corrupt"],
            "n_layers": trace_json["summary"]["n_layers"],
            "method": trace_json.get("method", "exact"),
            "confirm": (trace_json.get("config") or {}).get("confirm"),
            "agreement": trace_json["summary"].get("agreement"),
            "seconds": trace_json.get("seconds"),
        },
        "selection": {k: layers_json.get(k) for k in ("kind", "layers", "method", "scores", "n_facts", "params")},
        "unlearn": {
            "method": unlearn_json["method"],
            "layers": unlearn_json["layers"],
            "kind": unlearn_json["kind"],
            "trainable": unlearn_json.get("parameters"),
            "steps": unlearn_json.get("steps"),
            "stopped": unlearn_json.get("stopped"),
            "per_epoch": unlearn_json.get("per_epoch"),
            "wall_time_s": unlearn_json.get("wall_time_s"),
            "forget_target": unlearn_json.get("forget_target"),
            "step_size": unlearn_json.get("step_size"),
            "outcome": unlearn_json.get("outcome"),
            "validation": _validation_summary(unlearn_json.get("validation")),
            "prompt_format": unlearn_json.get("prompt_format"),
        },
        "stages": {name: {"seconds": round(r.seconds, 2), "skipped": r.skipped} for name, r in results.items()},
        "wall_time_s": round(wall_time, 2),
    }
    if retrace is not None:
        re_json = read_json(retrace.path / "trace.json")
        kind, group = layers_json["kind"], layers_json.get("params", {}).get("group", "last_subject")
        summary["retrace"] = {
            "te": re_json["summary"]["te"],
            "p_clean": re_json["summary"]["p_clean"],
            "aie_before": layer_profile(trace_json["summary"], kind, group),
            "aie_after": layer_profile(re_json["summary"], kind, group),
            "kind": kind,
            "group": group,
        }
    return summary


def _validation_summary(validation: dict | None) -> dict | None:
    if not validation:
        return None
    return {k: validation.get(k) for k in ("eval_steps", "select_by", "patience", "data", "best_step", "best", "stopped_early")} | {"evaluations": len(validation.get("history", []))}


def method_notes(summary: dict) -> list[str]:
    """Sentences on the method's own numbers: the layer selection's warning, the α schedule, calibration, arrival and step size."""
    notes = []
    sel = summary.get("selection") or {}
    params = sel.get("params") or {}
    if params.get("warning"):
        notes.append(f"Layer selection: {params['warning']}.")
    u = summary.get("unlearn") or {}
    epochs = u.get("per_epoch") or []
    if u.get("method") == "sha256" and epochs and all(e.get("alpha_highest") is not None and e["alpha_highest"] <= e.get("alpha_lowest", 0) + 1e-12 for e in epochs):
        notes.append(f"α stayed at its floor ({epochs[0]['alpha_lowest']:g}) for the whole run: the retain loss never rose above its first-epoch "
                     "reference, so the adaptive weight never had to act (the retain set was not under pressure).")
    target = u.get("forget_target") or {}
    if target.get("level") is None and str(target.get("source", "")).startswith("auto"):
        notes.append(f"Forgetting was not calibrated: {target['source']}.")
    notes += unlearning_notes(u)
    return notes


def unlearning_notes(u: dict) -> list[str]:
    """Did forgetting arrive, and what the step-size probe had to say (every benchmark's report)."""
    notes = []
    result = u.get("outcome") or {}
    if result.get("note"):
        text = result["note"]
        notes.append(f"Forgetting: {text[0].upper()}{text[1:]}.")
    plan = u.get("step_size") or {}
    if plan.get("note"):
        notes.append(f"Step size: {plan['note']}.")
    return notes


def lr_epochs_cell(plan: dict | None, unlearn) -> str:
    """``auto → 3.2e-04 / auto → 9 (81 steps)``: what was asked for and what ran."""
    if not plan:
        return f"{unlearn.lr} / {unlearn.epochs}"
    lr = f"auto → {plan['lr']:.3g}" if plan["lr_source"] == "auto" else f"{plan['lr']:.3g}"
    epochs = f"auto → {plan['epochs']:g}" if plan["epochs_source"] == "auto" else f"{plan['epochs']:g}"
    return f"{lr} / {epochs} ({plan['max_steps']} steps)"


def config_rows(s: dict, config) -> list[list[str]]:
    """The configuration table rows every benchmark's report starts with."""
    return [
        ["model", s["model"]], ["data", s["data"]], ["unlearning method", s["unlearn"]["method"]],
        ["lr / epochs", lr_epochs_cell(s["unlearn"].get("step_size"), config.unlearn)],
        ["trace", f"samples {config.trace.samples}, noise {config.trace.noise}, window {config.trace.window}, method {config.trace.method}"],
        ["selection", f"{config.trace.select_mode}, k {config.trace.select_k}, kind {config.trace.select_kind}"],
    ]


def trace_method_lines(trace: dict) -> list[str]:
    """How the trace was computed, and for method ``auto`` how well its screen agreed with exact tracing."""
    method = trace.get("method", "exact")
    if method == "exact":
        return ["Exact causal tracing (ROME) of every token and layer.", ""]
    if method == "attribution":
        return ["Attribution-patching estimate of every token and layer (not exact tracing).", ""]
    groups = ", ".join(g.replace("_", " ") for g in trace.get("confirm") or [])
    lines = [f"Method `auto`: attribution patching screened every token and layer; exact tracing at the {groups} token(s), "
             "whose exact values are what layer selection reads (rows marked » in the heatmaps). "
             "Agreement of the screen with exact tracing there, Spearman correlation of the per-layer curves:", ""]
    agreement = trace.get("agreement") or {}
    lines += [md_table(["kind", "AIE curve", "per fact (mean)", "curves"], [[k, fmt(a.get("aie")), fmt(a.get("per_fact")), a.get("n")] for k, a in agreement.items()]), ""]
    return lines


def group_phrase(params: dict) -> str:
    """``first subject token (auto: the subject group with the strongest evidence; …)`` for the report."""
    group = str(params.get("group", "last_subject")).replace("_", " ") + " token"
    groups = params.get("groups")
    if params.get("group_requested") != "auto" or not groups:
        return group
    cells = "; ".join(f"{g.replace('_', ' ')}: window {c.get('layers')}, AIE sum {fmt(c.get('aie_sum'))}, "
                      f"{len(c.get('distinguishable') or [])} layer(s) distinguishable from 0" for g, c in groups.items())
    return f"{group} (group auto: the subject token group with the largest AIE among those with evidence — {cells})"


def step_size_lines(u: dict) -> list[str]:
    """The report's paragraph on the learning rate and the budget (:mod:`unlearn.step_size`)."""
    plan = u.get("step_size") or {}
    if not plan:
        return []
    if plan.get("lr_source") == "manual" and plan.get("epochs_source") == "manual":
        return [f"**Step size.** Learning rate {plan['lr']:.3g} and {plan['epochs']:g} epochs, as configured.", ""]
    probes = plan.get("probes") or []
    out = [f"**Step size.** Learning rate **{plan['lr']:.3g}** ({plan['lr_source']}), {plan['epochs']:g} epochs = {plan['max_steps']} steps "
           f"({plan['epochs_source']}). Each probe trained {plan.get('rows')} from the initial weights for a few steps and measured "
           f"the median row's share of the way to the never-seen level ({fmt(plan.get('level'))} nats/token); the displacement at which "
           f"a probe arrives ({fmt(plan.get('arrive_displacement'))}) sets the rate"
           + (f", which arrives in about {plan['reach_epochs']:.1f} epochs" if plan.get("reach_epochs") else "") + " (docs/step-size.md).", ""]
    if probes:
        out += [md_table(["probe lr", "share of the way", "forget NLL after", "retain NLL after"],
                          [[f"{q['lr']:.3g}", fmt(q["share"]), fmt(q["forget_nll"]), fmt(q.get("retain_nll"))] for q in probes]), ""]
    return out


def method_sections(s: dict, config, images: dict) -> list[str]:
    """The report's benchmark-independent sections: facts, where they live, before/after trace, unlearning."""
    facts = s["facts"]
    sel = s["selection"]
    out = ["## Facts", "", md_table(["candidates", "kept", "traced", "skipped: subject not found", "skipped: wrong prediction", "skipped: too long"], [[
        facts.get("candidates", "–"), facts.get("kept", "–"), facts.get("traced", "–"), facts.get("subject not found", 0), facts.get("wrong prediction", 0), facts.get("too long", 0)]]), ""]
    te = s["trace"]["te"]
    out += [f"Average total effect of the corruption: **{fmt(te['mean'])}** (95 % CI {fmt(te.get('ci_low'))}–{fmt(te.get('ci_high'))}); "
            f"p(answer) clean {fmt(s['trace']['p_clean']['mean'])}, corrupted {fmt(s['trace']['p_corrupt']['mean'])}.", ""]
    out += ["## Where the facts live", ""]
    out += trace_method_lines(s["trace"])
    out += [f"![aie]({images['aie']})", ""]
    heatmaps = images.get("heatmaps") or []
    if heatmaps:
        retraced = any(h["retrace"] for h in heatmaps)
        out += [f"Per-fact traces of the first {len(heatmaps)} facts" + (", on the target and, re-traced, on the unlearned model:" if retraced else ":"), ""]
        if retraced:
            out += [md_table(["fact", "target", "unlearned"], [[f"`{h['fact']}`", f"![{h['fact']} target]({h['trace']})",
                                                                  f"![{h['fact']} unlearned]({h['retrace']})" if h["retrace"] else "–"] for h in heatmaps]), ""]
        else:
            out += [f"![{h['fact']}]({h['trace']})" for h in heatmaps] + [""]
    scores = sel.get("scores") or []
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:3]
    out += [f"**Selected layers: {sel['layers']}** ({sel['kind']}, method `{sel['method']}`, over {sel['n_facts']} facts). "
            f"The window maximises the summed AIE of the {sel['kind'].upper()} output at the {group_phrase(sel.get('params') or {})}; "
            f"the strongest single layers are {top}.", ""]
    if config.unlearn.layers != "auto":
        out += [f"Unlearning used the configured layers {s['unlearn']['layers']} instead of the traced selection.", ""]
    if "retrace" in s:
        r = s["retrace"]
        out += ["## Before and after: did the effect leave the located layers?", "", f"![trace comparison]({images['trace_compare']})", "",
                md_table(["layer", "AIE target", "AIE unlearned"], [[i, fmt(a), fmt(b)] for i, (a, b) in enumerate(zip(r["aie_before"], r["aie_after"]))]), "",
                f"p(answer) on the unlearned model: {fmt(r['p_clean']['mean'])} (target: {fmt(s['trace']['p_clean']['mean'])}).", ""]
    u = s["unlearn"]
    out += ["## Unlearning", "", f"Method `{u['method']}` on layers {u['layers']} ({u['kind']}), {u['steps']} steps"
            + (f", stopped: {u['stopped']}" if u.get("stopped") else "") + ".", ""]
    out += step_size_lines(u)
    if "training" in images:
        out += [f"![training curves]({images['training']})", ""]
    if u.get("per_epoch"):
        keys = [k for k in ("loss", "ce_forget", "ce_retain", "alpha", "forget_reached") if k in u["per_epoch"][0]]
        out += [md_table(["epoch", *keys], [[e["epoch"], *[fmt(e.get(k)) for k in keys]] for e in u["per_epoch"]]), ""]
    target = u.get("forget_target") or {}
    if target.get("level") is not None:
        levels = target.get("levels") or [[0, target["level"]]]
        out += [f"**Calibrated forgetting.** Each forget row was pushed until its per-token NLL reached the level of text the model never saw — "
                f"the median NLL of {target.get('documents', '?')} reference documents ({target.get('source')}): {levels[0][1]:.3f} before training"
                + (f", {levels[-1][1]:.3f} at the end (re-measured on the current model every "
                   + ("step)" if config.unlearn.forget_update_steps == 1 else f"{config.unlearn.forget_update_steps} steps)") if len(levels) > 1 else "")
                + f"; rows past it were {'pulled back' if config.unlearn.forget_mode == 'pull' else 'left alone'}.", ""]
    v = u.get("validation")
    if v:
        best = v.get("best") or {}
        cells = ", ".join(f"{k} {fmt(best.get(k))}" for k in ("final", "task", "mia_auc", "forget_knowledge", "retain_knowledge") if best.get(k) is not None)
        out += [f"**Checkpoint selection.** Every {v['eval_steps']} steps the model was scored on the validation part ({v['data']}); "
                f"the kept weights are step **{v.get('best_step')}**, best by `{v['select_by']}` ({cells})"
                + ("; training stopped early" if v.get("stopped_early") else "") + ". The test documents were never read during training.", ""]
        if "validation" in images:
            out += [f"![validation curve]({images['validation']})", ""]
    return out


def markdown_to_html(md: str, run_dir: Path, title: str) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) → self-contained HTML."""
    body, table = [], []

    def image(alt: str, src: str) -> str:
        data = base64.b64encode((run_dir / src).read_bytes()).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    def inline(text: str) -> str:
        parts = re.split(r"!\[(.*?)\]\((.*?)\)", text)  # text, alt, src, text, ...
        out = []
        for i in range(0, len(parts), 3):
            piece = html.escape(parts[i])
            piece = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", piece)
            out.append(re.sub(r"`(.+?)`", r"<code>\1</code>", piece))
            if i + 2 < len(parts):
                out.append(image(parts[i + 1], parts[i + 2]))
        return "".join(out)

    def flush():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|(---\|)+", r)]
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells[0]) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:]) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if m := re.fullmatch(r"(#+) (.*)", line):
            n = len(m.group(1))
            body.append(f"<h{n}>{inline(m.group(2))}</h{n}>")
        elif m := re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line):
            body.append(f"<p>{image(m.group(1), m.group(2))}</p>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def wall_time_lines(stages: dict[str, dict], wall_time_s: float) -> list[str]:
    """The wall-time table: what each stage cost when it was computed, and whether this run reused it."""
    rows = [[k, "reused (cached)" if v["skipped"] else "computed", f"{v['seconds']:.1f}"] for k, v in stages.items()]
    computed = sum(v["seconds"] for v in stages.values())
    cached = sum(v["seconds"] for v in stages.values() if v["skipped"])
    total = f"This run took {wall_time_s:.1f} s"
    if cached:
        total += (f"; {sum(v['skipped'] for v in stages.values())} of {len(stages)} stages were reused from an earlier run "
                  f"(their compute time, {cached:.1f} s, is not part of it); computing every stage took {computed:.1f} s in all")
    return [md_table(["stage", "this run", "compute time (s)"], rows), "", total + ".", ""]


def _heatmap_pairs(run_dir: Path, trace: Path, retrace: Path | None) -> list[dict]:
    """Each traced fact's heatmap with its re-trace (same file name), as paths relative to the report."""
    pairs = []
    for png in sorted((trace / "heatmaps").glob("*.png")):
        again = retrace / "heatmaps" / png.name if retrace is not None else None
        fact = png.stem.split("_", 1)[1] if "_" in png.stem else png.stem
        pairs.append({"fact": fact, "trace": str(png.relative_to(run_dir)),
                      "retrace": str(again.relative_to(run_dir)) if again is not None and again.is_file() else None})
    return pairs


def method_figures(run_dir: Path, summary: dict, *, trace, retrace, unlearned) -> dict:
    """The figures every benchmark's report shows: AIE, per-fact heatmaps, trace comparison, training and validation curves."""
    images = {"aie": str(Path("trace") / "aie.png"), "heatmaps": _heatmap_pairs(run_dir, trace.path, retrace.path if retrace is not None else None)}
    figures = run_dir / FIGURES
    if "retrace" in summary:
        r = summary["retrace"]
        trace_before = read_json(trace.path / "trace.json")["summary"]
        trace_after = read_json(retrace.path / "trace.json")["summary"]
        plot_trace_comparison(trace_before, trace_after, figures / "trace_compare.png", kind=r["kind"], group=r["group"], layers=summary["unlearn"]["layers"])
        images["trace_compare"] = f"{FIGURES}/trace_compare.png"
    unlearn_json = read_json(unlearned.path / "unlearn.json")
    if plot_training_curves(unlearn_json.get("log_history", []), figures / "training_curves.png"):
        images["training"] = f"{FIGURES}/training_curves.png"
    if plot_validation(unlearn_json.get("validation"), figures / "validation.png"):
        images["validation"] = f"{FIGURES}/validation.png"
    return images


def write_documents(run_dir: Path, summary: dict, images: dict, md: str, name: str) -> dict:
    """``summary.json`` (with the figures), ``report.md`` and the self-contained ``report.html``."""
    summary["figures"] = images
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "report.md", md)
    write_text(run_dir / "report.html", markdown_to_html(md, run_dir, f"selective-amnesia: {name}"))
    return summary


# --------------------------------------------------------------------------- the terminal


def print_step_size(summary: dict) -> None:
    """The measured step size, one line (every benchmark's headline)."""
    plan = (summary.get("unlearn") or {}).get("step_size")
    if plan:
        reach = f"; the forget rows arrive at the never-seen level in ~{plan['reach_epochs']:.1f} epochs" if plan.get("reach_epochs") else ""
        print(f"\nstep size (lr / epochs): {lr_epochs_cell(plan, None)}{reach}")
