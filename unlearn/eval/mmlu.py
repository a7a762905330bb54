"""MMLU through lm-eval on the in-memory model: per subject, per category, micro and macro.

Sources (``MMLUConfig.source``):

* ``hub`` — lm-eval's stock ``mmlu_<subject>`` tasks, which read the dataset from the Hub;
* a folder — a local copy in ``hails/mmlu_no_train`` layout
  (``<subject>/{test,dev}/data-*.arrow``, e.g. ``../shared/data/mmlu_no_train``): task YAMLs are
  written at run time that ``include`` lm-eval's stock subject YAML (so the prompt, choices,
  few-shot split and metric stay lm-eval's) and only point ``dataset_path: arrow`` at the files;
  this runs with ``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``;
* ``builtin`` — the subset shipped with the package (5 test questions per subject, 285 in all;
  ``unlearn/eval/mmlu_subset``), read like a local copy;
* ``auto`` — the folder in ``$AMNESIA_MMLU_DIR`` when set, else ``hub`` when the Hub answers (or
  its MMLU is in the local cache), else ``builtin``; ``off`` — skip MMLU.

The model is wrapped as lm-eval's ``HFLM`` and scored with ``simple_evaluate``. Accuracy is
recounted from lm-eval's per-question samples: per subject ``correct / total``, per category
(lm-eval's four MMLU groups) and over all questions (micro = the official ``average_acc``, which
becomes ``mmlu_average``), plus the macro mean over subjects.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tracing.errors import AmnesiaError
from tracing.logs import quiet_loggers

from .config import MMLUConfig  # noqa: F401 - part of this module's API

ENV_DIR = "AMNESIA_MMLU_DIR"
BUILTIN_DIR = Path(__file__).parent / "mmlu_subset"
HUB_DATASET = "cais/mmlu"
CATEGORY_TAGS = {
    "mmlu_stem_tasks": "stem",
    "mmlu_humanities_tasks": "humanities",
    "mmlu_social_sciences_tasks": "social_sciences",
    "mmlu_other_tasks": "other",
}
HOW_TO_PROVIDE = (
    "pass --mmlu DIR with a local copy in hails/mmlu_no_train layout (<subject>/test/data-*.arrow, "
    f"e.g. ../shared/data/mmlu_no_train), set {ENV_DIR}, or skip MMLU with --mmlu off"
)


@dataclass(frozen=True)
class Source:
    """A resolved MMLU source: ``mode`` is off, hub or local; ``path`` is the local folder."""

    mode: str
    path: Path | None = None
    why: str = ""

    @property
    def is_files(self) -> bool:
        return self.mode in ("local", "builtin")

    def describe(self) -> str:
        if self.mode == "builtin":
            return "builtin subset (5 test questions per subject, 285 in all)"
        return str(self.path) if self.mode == "local" else self.mode


def resolve_source(source: str) -> Source:
    """``auto`` → ``$AMNESIA_MMLU_DIR`` when set, else hub; ``off``/``hub`` as is; anything else is a folder."""
    if source == "off":
        return Source("off")
    if source == "hub":
        return Source("hub")
    if source == "builtin":
        return Source("builtin", BUILTIN_DIR, "asked for (--mmlu builtin)")
    if source == "auto":
        env = os.environ.get(ENV_DIR)
        if env:
            return Source("local", _check_local(Path(env).expanduser(), f"${ENV_DIR}"), f"${ENV_DIR}")
        if hub_available():
            return Source("hub", why="the Hugging Face Hub")
        return Source("builtin", BUILTIN_DIR, f"no ${ENV_DIR} and the Hugging Face Hub is not reachable")
    return Source("local", _check_local(Path(source).expanduser(), "--mmlu"), "--mmlu")


def hub_available() -> bool:
    """True when lm-eval's MMLU can be read from the Hub now: online and answering, or cached while offline."""
    if _offline():
        try:
            _check_cached("abstract_algebra")
            return True
        except Exception:
            return False
    return _hub_answers()


def _hub_answers() -> bool:
    """One probe of the Hub per process (a machine without network answers within seconds)."""
    from ..hub import probe

    return probe(HUB_DATASET, "dataset") == "found"


def _arrow_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.arrow"))


def _check_local(root: Path, where: str) -> Path:
    if not root.is_dir():
        raise AmnesiaError(f"{where} {root}: MMLU folder does not exist; {HOW_TO_PROVIDE}")
    if not local_subjects(root):
        raise AmnesiaError(f"{where} {root}: no MMLU subjects (expected <subject>/test/data-*.arrow and <subject>/dev/data-*.arrow, the hails/mmlu_no_train layout)")
    return root


def local_subjects(root: Path) -> list[str]:
    """Subjects of a local copy: folders with ``test/*.arrow`` and ``dev/*.arrow``."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _arrow_files(p / "test") and _arrow_files(p / "dev"))


def stock_task_dir() -> Path:
    """lm-eval's stock MMLU task folder (``lm_eval/tasks/mmlu/default``)."""
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"


def stock_subjects() -> dict[str, str]:
    """Subject → category, from lm-eval's stock subject YAMLs (their ``tag``)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    out = {}
    for path in sorted(stock_task_dir().glob("mmlu_*.yaml")):
        cfg = load_yaml(path, resolve_func=False, recursive=False)
        subject = str(cfg.get("task", path.stem))[len("mmlu_") :]
        out[subject] = CATEGORY_TAGS.get(str(cfg.get("tag")), "other")
    return out


def select_subjects(available: Sequence[str], wanted: Sequence[str], where: str) -> list[str]:
    """``wanted`` (all when empty), each checked against ``available``."""
    if not wanted:
        return list(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise AmnesiaError(f"--mmlu-subjects: unknown subject {unknown[0]!r} in {where} (have: {', '.join(available)})")
    return list(dict.fromkeys(wanted))


def write_local_tasks(root: Path, subjects: Sequence[str], folder: Path) -> list[str]:
    """Write one task YAML per subject into ``folder`` that reads ``root``'s arrow files; returns the task names."""
    import yaml

    stock = stock_task_dir()
    names = []
    for subject in subjects:
        task = f"mmlu_{subject}"
        config = {
            "include": str(stock / f"{task}.yaml"),
            "task": task,
            "dataset_path": "arrow",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: _arrow_files(root / subject / split) for split in ("test", "dev")}},
        }
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        names.append(task)
    return names


def summarize(samples: dict[str, list[dict]], categories: dict[str, str]) -> dict:
    """Accuracy from lm-eval's per-question samples (``{"mmlu_<subject>": [{"acc": 0|1, …}, …]}``).

    Returns ``{"subjects": {s: {acc, correct, total, category}}, "categories": {c: {acc, correct,
    total, subjects}}, "micro", "macro", "questions"}``; micro weighs every question equally (the
    official ``average_acc``), macro every subject.
    """
    subjects: dict[str, dict] = {}
    for task, rows in sorted(samples.items()):
        subject = task[len("mmlu_") :] if task.startswith("mmlu_") else task
        correct = int(sum(float(r["acc"]) for r in rows))
        total = len(rows)
        subjects[subject] = {"acc": correct / total if total else None, "correct": correct, "total": total, "category": categories.get(subject, "other")}
    cats: dict[str, dict] = {}
    for info in subjects.values():
        c = cats.setdefault(info["category"], {"correct": 0, "total": 0, "subjects": 0})
        c["correct"] += info["correct"]
        c["total"] += info["total"]
        c["subjects"] += 1
    for c in cats.values():
        c["acc"] = c["correct"] / c["total"] if c["total"] else None
    correct = sum(s["correct"] for s in subjects.values())
    total = sum(s["total"] for s in subjects.values())
    accs = [s["acc"] for s in subjects.values() if s["acc"] is not None]
    return {
        "subjects": subjects,
        "categories": dict(sorted(cats.items())),
        "micro": correct / total if total else None,
        "macro": sum(accs) / len(accs) if accs else None,
        "questions": total,
    }


def _hflm_batch_size(model, config: MMLUConfig):
    if config.batch_size:
        return config.batch_size
    from ..batching import auto_rows, forward_row_bytes, memory_budget, model_dims

    device = next(model.parameters()).device
    width = 1024 if config.shots == 0 else 2048
    return auto_rows(memory_budget(device), forward_row_bytes(model_dims(model), width), 64)


def _is_unreachable(exc: BaseException) -> bool:
    """True for the errors datasets / huggingface_hub raise when the Hub copy cannot be had."""
    seen = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, (ConnectionError, TimeoutError)) or name in (
            "OfflineModeIsEnabled", "DatasetNotFoundError", "LocalEntryNotFoundError", "HfHubHTTPError", "RepositoryNotFoundError",
        ):
            return True
        if isinstance(seen, FileNotFoundError) and "cached" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_mmlu(config: MMLUConfig) -> tuple[Source, list[str]]:
    """Check the settings and the data before any work: the resolved source and the subjects to run."""
    config.check()
    source = resolve_source(config.source)
    if source.mode == "off":
        return source, []
    stock = stock_subjects()
    if source.is_files:  # only subjects lm-eval has a stock task (prompt) for
        available = [s for s in local_subjects(source.path) if s in stock]
        if not available:
            raise AmnesiaError(f"{source.path}: none of its subject folders is an MMLU subject lm-eval knows (e.g. anatomy, astronomy)")
        return source, select_subjects(available, config.subjects, str(source.path))
    subjects = select_subjects(sorted(stock), config.subjects, "lm-eval's mmlu tasks")
    if _offline():
        _check_cached(subjects[0])
    return source, subjects


def _offline() -> bool:
    """True under ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1``."""
    import datasets
    import huggingface_hub

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


def _check_cached(subject: str) -> None:
    """Offline, lm-eval can only read a cached copy of its MMLU data: check now, not after generating."""
    import datasets
    from lm_eval.tasks._yaml_loader import load_yaml

    path = load_yaml(stock_task_dir() / "_default_template_yaml", resolve_func=False).get("dataset_path") or "cais/mmlu"
    try:
        datasets.load_dataset_builder(path, subject)
    except Exception as exc:
        if _is_unreachable(exc):
            raise AmnesiaError(f"MMLU: lm-eval's mmlu tasks could not load their data from the Hub (offline mode, and {path} is not in the local cache); {HOW_TO_PROVIDE}") from None
        raise


#: lm-eval modules whose tqdm bars a quiet run switches off (with ``progress``, only the per-task one).
_TQDM_MODULES = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.models.huggingface")


def _silenced(bar):
    def quiet(*args, **kwargs):
        return bar(*args, **{**kwargs, "disable": True})

    return quiet


@contextlib.contextmanager
def _quiet_lm_eval(progress: bool = True) -> Iterator[None]:
    """What lm-eval and datasets print that says nothing about the scores, off for one MMLU run.

    * ``datasets`` draws a "Generating test/dev split" bar per subject file (114 for 57 subjects);
    * lm-eval draws a bar per task while it builds the requests (57 "5/5" bars); without
      ``progress`` its "Tokenizing inputs" and "Running loglikelihood requests" bars go too;
    * lm-eval records the current directory's git hash by running ``git describe``, which prints
      "fatal: not a git repository" outside a checkout; that field is not used here, so it is
      left empty for the run.

    Each is a module attribute of the library (``lm_eval.evaluator.get_git_commit_hash``, the
    modules' ``tqdm``), replaced for the block and restored afterwards.
    """
    import importlib

    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    saved = []
    replace = [("lm_eval.evaluator", "get_git_commit_hash", lambda old: lambda: None)]
    replace += [(name, "tqdm", _silenced) for name in (_TQDM_MODULES[:1] if progress else _TQDM_MODULES)]
    for name, attr, make in replace:
        module = importlib.import_module(name)
        if hasattr(module, attr):
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, make(getattr(module, attr)))
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
        if bars:
            datasets.enable_progress_bars()


def run_mmlu(model, tokenizer, config: MMLUConfig = MMLUConfig(), *, progress: bool = True) -> dict | None:
    """Score ``model`` on MMLU; None when the source is ``off``. See the module docstring.

    ``progress``: lm-eval's request bars (off: no bar at all)."""
    source, subjects = check_mmlu(config)
    if source.mode == "off":
        return None
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    categories = stock_subjects()
    with tempfile.TemporaryDirectory(prefix="amnesia-mmlu-") as tmp, quiet_loggers("lm_eval", "lm-eval"), _quiet_lm_eval(progress):
        if source.is_files:
            tasks = write_local_tasks(source.path, subjects, Path(tmp))
            manager = TaskManager(include_path=tmp, include_defaults=False)
        else:
            tasks = [f"mmlu_{s}" for s in subjects]
            manager = TaskManager(include_path=str(stock_task_dir()), include_defaults=False)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=_hflm_batch_size(model, config))
        was_training = model.training
        model.eval()
        try:
            results = simple_evaluate(
                model=lm, tasks=tasks, num_fewshot=config.shots, limit=config.limit, task_manager=manager,
                log_samples=True, bootstrap_iters=0,
            )
        except Exception as exc:
            if source.mode == "hub" and _is_unreachable(exc):
                raise AmnesiaError(f"MMLU: lm-eval's mmlu tasks could not load their data from the Hub ({type(exc).__name__}); {HOW_TO_PROVIDE}") from None
            raise
        finally:
            model.train(was_training)
    summary = summarize(results["samples"], categories)
    for task, res in results["results"].items():  # lm-eval's own numbers must agree with the recount
        subject = task[len("mmlu_") :]
        if subject in summary["subjects"] and abs(res["acc,none"] - summary["subjects"][subject]["acc"]) > 1e-12:
            raise RuntimeError(f"MMLU {task}: lm-eval reports acc {res['acc,none']} but its samples give {summary['subjects'][subject]['acc']}")
    return {
        "source": source.describe(),
        "mode": source.mode,
        "why": source.why,
        "shots": config.shots,
        "limit": config.limit,
        **summary,
        "lm_eval_version": getattr(lm_eval, "__version__", None),
    }
