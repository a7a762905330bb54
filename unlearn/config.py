"""The unlearning stage's settings, importable without torch (the CLI builds its ``--help`` from them).

:class:`UnlearnConfig` (every hyperparameter; a method's own settings are its module's
``Settings``, :mod:`unlearn.methods`) and :class:`ModelOptions` (how a model is loaded).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tracing.errors import AmnesiaError
from tracing.settings import auto_or_number, load_yaml_text, setting

from .methods import describe_methods, get_method
from .methods.sha256 import AlphaParams  # noqa: F401 - the sha256 settings UnlearnConfig's alpha_* fields build

#: The ``--help`` groups of UnlearnConfig's fields (tracing.settings: one field, one option).
GROUPS = {
    "train": "what trains",
    "optimization": "optimization",
    "method": "method parameters",
    "forgetting": "calibrated forgetting (aim at never-seen text, not at infinity)",
    "validation": "validation during training (checkpoint selection)",
    "checkpoints": "checkpoints and logging",
}
# Config fields that may change between an interrupted run and its resume.
RESUME_FREE = ("logging_steps", "save_steps", "save_total_limit", "report_to", "keep_checkpoints")


@dataclass
class UnlearnConfig:
    """Every hyperparameter of the unlearning stage; each field's help is its ``amnesia unlearn`` option's.

    The batch defaults are the paper's for OLMo-1B/7B: MLPs of layers 0-5, per-device batch 12 ×
    accumulation 10 (``bf16`` is off here so the defaults also run on CPU; turn it on for GPUs).
    The forget term is ours, calibrated to never-seen text (:mod:`unlearn.calibration`):
    ``forget_target="auto"``, ``forget_mode="pull"``, ``forget_tokens="all"``,
    ``forget_eos=False``, re-measured every step, with a constant learning rate (the target is
    the brake). The step size and the budget are measured, not given: ``lr="auto"`` probes the
    model on the validation rows for the rate that brings the forget rows to the level in
    ``reach_epochs`` epochs, ``epochs="auto"`` trains ``budget_factor`` times that
    (:mod:`unlearn.step_size`). ``unlearn.semeval.paper_config`` is the paper's recipe unchanged
    (lr 1.5e-5, 8 epochs, ``forget_target="none"``, answers only, EOS included, linear decay).
    """

    method: str = setting("sha256", group="train",
        help=lambda: f"the unlearning method, one of the registered ones (unlearn.methods; a typo names the nearest): {describe_methods()}")
    layers: str | list[int] = setting("0-5", group="train",
        help="all, a range (0-5), a list (0,1,2,7), a layers.json (or a trace folder holding one), or auto (run `amnesia trace` first and use its selection)")
    kind: Literal["auto", "mlp", "attn", "all"] = setting("auto", group="train",
        help="modules to train in those layers; auto = the layers.json's kind when mlp/attn, else mlp; all = the whole layer")
    epochs: float | str = setting("auto", group="optimization", type=auto_or_number,
        help="passes over the forget set; auto = --budget-factor × the epochs the step size needs to reach the never-seen level (validation and --patience stop earlier)")
    max_steps: int = setting(-1, group="optimization",
        help="stop after this many optimizer steps (overrides --epochs when > 0)")
    lr: float | str = setting("auto", group="optimization", type=auto_or_number,
        help="learning rate (AdamW); auto = probe the model on the validation rows for the rate that brings the forget rows to the never-seen level in --reach-epochs epochs (docs/step-size.md)")
    reach_epochs: float = setting(3.0, group="optimization",
        help="--lr auto: epochs in which the chosen rate should bring the forget rows to the never-seen level")
    budget_factor: float = setting(3.0, group="optimization",
        help="--epochs auto: train this many times as long as reaching the level takes")
    probe_steps: int = setting(3, group="optimization",
        help="--lr auto: optimizer steps of each probe")
    hold_factor: float = setting(0.3, group="optimization",
        help="once the watched validation forget rows are at their never-seen level, multiply the rate by this (1 = keep it)")
    lr_scheduler: str = setting("constant", group="optimization",
        help="transformers scheduler name: linear, constant, cosine, ...")
    warmup_steps: int = setting(0, group="optimization",
        help="learning-rate warmup steps")
    weight_decay: float = setting(0.0, group="optimization",
        help="AdamW weight decay")
    batch_size: int = setting(12, group="optimization",
        help="forget rows (and as many retain rows) per micro-batch and device")
    grad_accum: int = setting(10, group="optimization",
        help="micro-batches accumulated per optimizer step")
    max_length: int = setting(512, group="optimization",
        help="truncate examples to this many tokens (a warning counts truncated rows)")
    schedule: Literal["joint", "sequential"] = setting("joint", group="optimization",
        help="joint: every epoch shuffles the whole forget set; sequential: --epochs passes over one chunk of forget rows, then the next chunk")
    chunk_size: int = setting(32, group="optimization",
        help="sequential schedule: forget rows per chunk (in data order)")
    retain_ratio: int = setting(1, group="optimization",
        help="retain rows per forget row in each micro-batch")
    group_by_length: bool = setting(False, group="optimization",
        help="joint schedule: sort the rows of each optimizer step by length into its micro-batches (same rows per step, far less padding; off = the paper's random micro-batches)")
    prompt_format: Literal["raw", "chat"] = setting("raw", group="optimization",
        help="raw = input + output as they are (how the SemEval targets were fine-tuned and scored); chat = the input wrapped in the tokenizer's chat template; use the format the target was trained and will be scored with")
    bf16: bool = setting(False, group="optimization",
        help="bfloat16 mixed precision (the paper's setting on GPUs)")
    fp16: bool = setting(False, group="optimization",
        help="float16 mixed precision")
    gradient_checkpointing: bool = setting(False, group="optimization",
        help="recompute activations in the backward pass to save memory")
    max_grad_norm: float = setting(1.0, group="optimization",
        help="gradient clipping norm (0 = off)")
    seed: int = setting(42, group="optimization",
        help="random seed (data order, LoRA init); same seed, same run on CPU")
    alpha_variant: Literal["paper", "code"] = setting("paper", group="method",
        help="sha256 alpha schedule: paper (clip to [alpha-min, 2.8]) or the authors' code (clip at 2.3, round to 0.1)")
    alpha_a: float = setting(0.3, group="method",
        help="sha256: a in alpha = a*b^(CE_retain - L_ref) + c")
    alpha_b: float = setting(6.0, group="method",
        help="sha256: b in alpha = a*b^(CE_retain - L_ref) + c")
    alpha_c: float = setting(0.8, group="method",
        help="sha256: c in alpha = a*b^(CE_retain - L_ref) + c")
    alpha_min: float = setting(1.2, group="method",
        help="sha256: lowest alpha (and alpha during the first epoch)")
    alpha_max: float | None = setting(None, group="method",
        help="sha256: highest alpha; default 2.8 (paper) or 2.3 (code variant)")
    npo_beta: float = setting(0.1, group="method",
        help="npo: inverse temperature beta")
    method_args: dict = setting(default_factory=dict, cli=False, group="method",
                                 help="a plug-in method's own settings (its Settings dataclass; --method-arg KEY=VALUE); the built-in methods take theirs from the fields above")
    forget_target: str | float = setting("auto", group="forgetting",
        help="per-token NLL at which a forget row stops being pushed: auto = the --forget-quantile of never-seen reference documents' NLL under the model (DATA/mia_data/validation/nonmember.jsonl or --forget-reference; uncalibrated with a warning when there are none), none = push without limit, or a number")
    forget_reference: str | None = setting(None, group="forgetting",
        help="never-seen reference documents for --forget-target auto: a .jsonl with a 'document' per line, or a folder holding nonmember.jsonl; default DATA/mia_data/validation/nonmember.jsonl (never the test MIA files)")
    forget_quantile: float = setting(0.5, group="forgetting",
        help="quantile of the reference NLLs used as the level (0.5 = median: a forget document held there ranks like a never-seen one, AUC 0.5)")
    forget_spread: bool = setting(True, group="forgetting",
        help="each forget row aims at its own quantile of the reference NLLs, spread evenly over (0, 1), so the forgotten rows end distributed like never-seen text instead of piled at one level (which membership inference against another sample of never-seen text sees); --no-forget-spread: every row at --forget-quantile")
    forget_mode: Literal["pull", "stop"] = setting("pull", group="forgetting",
        help="pull = rows past the level are pulled back to it (two-sided); stop = they only stop being pushed")
    forget_update_steps: int = setting(1, group="forgetting",
        help="measure the level again every N optimizer steps on the current model (what an auditor compares with); 0 = once, before training")
    forget_tokens: Literal["all", "documents", "output"] = setting("all", group="forgetting",
        help="tokens of a forget row the forget term covers: all = prompt and output of every row (the whole text, as membership inference reads a document); documents = the whole text of sentence-completion rows, the answer of question rows; output = the answer only (the paper)")
    forget_eos: bool = setting(False, group="forgetting", negatable=True,
        help="include the EOS after a forget answer in the forget term (pushing it down makes the model stop ending its answers)")
    splits: list[str] = setting(default_factory=lambda: ["train", "validation"], group="validation",
        help="parts of the data unlearning reads, forget and retain alike: train,validation (the validation rows and members are then forgotten / kept like the train ones, so validating on them means something; the test reports the train part) or train")
    eval_steps: int = setting(0, group="validation",
        help="every N optimizer steps (and at the end) score the validation part — knowledge and regurgitation on --eval-rows forget/retain validation rows, MIA AUC on DATA/mia_data/validation/ (never the test MIA files) — and keep the best step's weights; 0 = off")
    eval_rows: int = setting(64, group="validation",
        help="validation rows per split (forget, retain) scored each time; a seeded subset")
    select_by: Literal["final", "mia", "task", "forgotten"] = setting("final", group="validation",
        help=("what the kept checkpoint maximizes: final = mean of the task aggregate and the MIA score (the official final score without MMLU), mia = the MIA score, "
              "task = the task aggregate; forgotten = MUSE's rule: the first validation step whose forget knowledge is at or below --select-floor "
              "(the least unlearning that forgets as much as a model that never saw the rows; training stops there), else the step with the lowest forget knowledge"))
    select_floor: float | None = setting(None, group="validation",
        help=("select_by forgotten: the forget knowledge (0-1, the validation's forget QA score) a step must reach; default: the retain model's on the "
              "validation rows when the run has one (TOFU, MUSE: measured in the run's select_floor/ stage), else 0"))
    validation_mia: Literal["loss", "min_k"] = setting("loss", group="validation",
        help="the validation membership attack: loss = each document's mean token NLL (the SemEval test's attack), min_k = Min-K% Prob, k 0.4 (TOFU's privleak attack)")
    validation_mia_tokens: Literal["document", "answer"] = setting("document", group="validation",
        help="which tokens of the validation MIA documents are scored: document = all (SemEval), answer = those after each document's 'prompt' field (TOFU's privleak; the TOFU request writes the field)")
    patience: int = setting(0, group="validation",
        help="stop after this many validations without improvement (0 = never stop early)")
    lora: bool = setting(False, group="train",
        help="train LoRA adapters on the selected modules' linear layers instead of their weights (merged into the output)")
    lora_r: int = setting(8, group="train",
        help="LoRA rank")
    lora_alpha: int = setting(16, group="train",
        help="LoRA scaling alpha")
    lora_dropout: float = setting(0.0, group="train",
        help="LoRA dropout")
    logging_steps: int = setting(10, group="checkpoints",
        help="log loss, CE_forget, CE_retain and alpha every N steps")
    save_steps: int = setting(0, group="checkpoints",
        help="write a checkpoint every N optimizer steps (0 = none)")
    save_total_limit: int = setting(2, group="checkpoints",
        help="keep at most this many complete checkpoints")
    keep_checkpoints: bool = setting(False, group="checkpoints",
        help="keep the checkpoints after a successful run (default: removed)")
    report_to: list[str] = setting(default_factory=lambda: ["none"], group="checkpoints",
        help="comma-separated trackers: none, tensorboard, wandb, ...")


    def __post_init__(self):
        # "1e-3" from a command line or a YAML 1.1 reader is a number, not a string
        for name in ("lr", "epochs"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "auto":
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    pass  # check() names it

    def check(self) -> None:
        """Raise :class:`AmnesiaError` for an impossible value (named like the CLI option)."""
        method = get_method(self.method)  # one line naming the nearest method on a typo
        if not isinstance(self.method_args, dict):
            raise AmnesiaError(f"method_args {self.method_args!r}: expected a mapping of the method's settings")
        method.settings_from(self)  # the method's own settings, checked now
        if self.kind not in ("auto", "mlp", "attn", "all"):
            raise AmnesiaError(f"kind {self.kind!r}: expected one of auto, mlp, attn, all")
        if self.prompt_format not in ("raw", "chat"):
            raise AmnesiaError(f"prompt_format {self.prompt_format!r}: expected raw or chat")
        if self.schedule not in ("joint", "sequential"):
            raise AmnesiaError(f"schedule {self.schedule!r}: expected joint or sequential")
        for name, what in (("lr", "learning rate"), ("epochs", "number of passes over the forget set")):
            value = getattr(self, name)
            if value != "auto" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
                raise AmnesiaError(f"{name} {value!r}: expected auto or a positive, finite {what}")
        for name in ("reach_epochs", "budget_factor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise AmnesiaError(f"{name} {value!r}: expected a positive number")
        if not (isinstance(self.hold_factor, (int, float)) and 0 < self.hold_factor <= 1):
            raise AmnesiaError(f"hold_factor {self.hold_factor!r}: expected a number in (0, 1] (1 = the same rate after the forget rows arrive)")
        if not isinstance(self.probe_steps, int) or isinstance(self.probe_steps, bool) or self.probe_steps < 1:
            raise AmnesiaError(f"probe_steps {self.probe_steps!r}: expected a positive integer")
        if self.schedule == "sequential" and self.epochs == "auto":
            raise AmnesiaError("epochs auto: the sequential schedule needs a whole number of passes per chunk (set epochs)")
        if self.schedule == "sequential" and (self.epochs != int(self.epochs) or self.epochs < 1):
            raise AmnesiaError(f"epochs {self.epochs}: the sequential schedule needs a whole number of passes per chunk")
        if self.alpha_variant not in ("paper", "code"):
            raise AmnesiaError(f"alpha_variant {self.alpha_variant!r}: expected paper or code")
        if self.group_by_length and self.schedule != "joint":
            raise AmnesiaError(f"group_by_length: works with the joint schedule only, not {self.schedule!r}")
        positive = {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "logging_steps": self.logging_steps,
            "lora_r": self.lora_r,
            "chunk_size": self.chunk_size,
            "retain_ratio": self.retain_ratio,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise AmnesiaError(f"{name} {value!r}: expected a positive integer")
        if self.save_steps < 0 or self.save_total_limit < 1:
            raise AmnesiaError(f"save_steps {self.save_steps} / save_total_limit {self.save_total_limit}: expected save_steps >= 0 and save_total_limit >= 1")
        if self.bf16 and self.fp16:
            raise AmnesiaError("bf16 and fp16 are both on: pick one")
        if not (isinstance(self.max_steps, int) and (self.max_steps == -1 or self.max_steps > 0)):
            raise AmnesiaError(f"max_steps {self.max_steps!r}: expected -1 (no limit: --epochs decides) or a positive number of optimizer steps")
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise AmnesiaError(f"warmup_steps {self.warmup_steps!r}: expected an integer >= 0")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise AmnesiaError(f"weight_decay {self.weight_decay!r}: expected a finite number >= 0")
        if self.max_grad_norm < 0:
            raise AmnesiaError(f"max_grad_norm {self.max_grad_norm}: expected >= 0 (0 turns clipping off)")
        if not self.npo_beta > 0:
            raise AmnesiaError(f"npo_beta {self.npo_beta}: expected a positive number")
        target = self.forget_target
        if isinstance(target, str) and target not in ("auto", "none"):
            try:
                target = float(target)
            except ValueError:
                raise AmnesiaError(f"forget_target {self.forget_target!r}: expected auto, none or a positive per-token NLL") from None
        if not isinstance(target, str) and not (isinstance(target, (int, float)) and target > 0):
            raise AmnesiaError(f"forget_target {self.forget_target!r}: expected auto, none or a positive per-token NLL")
        if self.forget_mode not in ("stop", "pull"):
            raise AmnesiaError(f"forget_mode {self.forget_mode!r}: expected stop or pull")
        if self.forget_tokens not in ("all", "documents", "output"):
            raise AmnesiaError(f"forget_tokens {self.forget_tokens!r}: expected all, documents or output")
        if not isinstance(self.forget_update_steps, int) or self.forget_update_steps < 0:
            raise AmnesiaError(f"forget_update_steps {self.forget_update_steps!r}: expected an integer >= 0 (0 = measure the level once)")
        if not self.splits or any(p not in ("train", "validation") for p in self.splits):
            raise AmnesiaError(f"splits {self.splits!r}: expected a non-empty list of train, validation")
        if not isinstance(self.eval_steps, int) or self.eval_steps < 0:
            raise AmnesiaError(f"eval_steps {self.eval_steps!r}: expected an integer >= 0 (0 = no validation during training)")
        if not isinstance(self.eval_rows, int) or self.eval_rows < 1:
            raise AmnesiaError(f"eval_rows {self.eval_rows!r}: expected a positive number of validation rows per split")
        if self.select_by not in ("final", "mia", "task", "forgotten"):
            raise AmnesiaError(f"select_by {self.select_by!r}: expected final, mia, task or forgotten")
        if self.select_floor is not None and (isinstance(self.select_floor, bool) or not isinstance(self.select_floor, (int, float))
                                              or not 0 <= self.select_floor <= 1):
            raise AmnesiaError(f"select_floor {self.select_floor!r}: expected a forget knowledge between 0 and 1 (or leave it out)")
        if self.select_floor is not None and self.select_by != "forgotten":
            raise AmnesiaError(f"select_floor {self.select_floor!r}: only select_by forgotten reads a floor (select_by is {self.select_by}); leave it out or set select_by forgotten")
        if self.select_by == "forgotten" and not self.eval_steps:
            raise AmnesiaError("select_by forgotten: keeps the first validated step at the floor, and eval_steps is 0 (no validation); set eval_steps (e.g. 5)")
        if self.validation_mia not in ("loss", "min_k"):
            raise AmnesiaError(f"validation_mia {self.validation_mia!r}: expected loss or min_k")
        if self.validation_mia_tokens not in ("document", "answer"):
            raise AmnesiaError(f"validation_mia_tokens {self.validation_mia_tokens!r}: expected document or answer")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise AmnesiaError(f"patience {self.patience!r}: expected an integer >= 0 (0 = never stop early)")
        if not 0 < self.forget_quantile < 1:
            raise AmnesiaError(f"forget_quantile {self.forget_quantile}: expected a number in (0, 1)")
        if not 0 <= self.lora_dropout < 1:
            raise AmnesiaError(f"lora_dropout {self.lora_dropout}: expected a number in [0, 1)")
        p = self.alpha_params()
        if not 0 < p.alpha_min <= p.alpha_max:
            raise AmnesiaError(f"alpha_min {p.alpha_min} / alpha_max {p.alpha_max}: expected 0 < alpha_min <= alpha_max")
        if not self.alpha_b > 0:
            raise AmnesiaError(f"alpha_b {self.alpha_b}: expected a positive base")
        from .params import check_layer_spec

        check_layer_spec(self.layers)  # a typo or a missing layers.json fails before any model loads

    def alpha_params(self) -> AlphaParams:
        """The α constants; ``alpha_variant='code'`` clips at 2.3 (unless ``alpha_max`` is set) and rounds to 0.1."""
        code = self.alpha_variant == "code"
        default_max = AlphaParams.code().alpha_max if code else AlphaParams.paper().alpha_max
        return AlphaParams(
            a=self.alpha_a,
            b=self.alpha_b,
            c=self.alpha_c,
            alpha_min=self.alpha_min,
            alpha_max=self.alpha_max if self.alpha_max is not None else default_max,
            decimals=1 if code else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "UnlearnConfig":
        """Build from a mapping (e.g. a YAML file's ``unlearn:`` section); unknown keys are an error."""
        import typing

        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise AmnesiaError(f"unlearn config: unknown key {unknown[0]!r} (known: {', '.join(sorted(hints))})")
        values = dict(values)
        for key, value in values.items():
            hint = hints[key]
            if hint == (float | str) and isinstance(value, (int, float)) and not isinstance(value, bool):
                values[key] = float(value)
            elif hint is float or hint == (float | None):
                if isinstance(value, int) and not isinstance(value, bool):
                    values[key] = float(value)
                elif not (isinstance(value, float) or (value is None and hint != float)):
                    raise AmnesiaError(f"unlearn config: {key} must be a number, got {value!r}")
            elif hint is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise AmnesiaError(f"unlearn config: {key} must be an integer, got {value!r}")
            elif hint is dict and not isinstance(value, dict):
                raise AmnesiaError(f"unlearn config: {key} must be a mapping, got {value!r}")
            elif hint is bool and not isinstance(value, bool):
                raise AmnesiaError(f"unlearn config: {key} must be true or false, got {value!r}")
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, section: str | None = "unlearn") -> "UnlearnConfig":
        """Read a YAML file (its ``section`` mapping when present, else the whole file)."""
        path = Path(path)
        if not path.is_file():
            raise AmnesiaError(f"{path}: config file does not exist")
        data = load_yaml_text(path.read_text(encoding="utf-8"), str(path)) or {}
        if section and isinstance(data, dict) and isinstance(data.get(section), dict):
            data = data[section]
        if not isinstance(data, dict):
            raise AmnesiaError(f"{path}: expected a mapping of unlearning hyperparameters")
        try:
            return cls.from_dict(data)
        except AmnesiaError as exc:
            raise AmnesiaError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model; every command's "model loading" options (``loading:`` in a run config)."""

    device: str = setting("auto", group="loading", help="auto (CUDA when present), cpu, cuda or cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting("auto", group="loading",
        help="weights dtype; auto = bfloat16 on GPU, float32 on CPU")
    allow_pickle: bool = setting(False, group="loading",
        help="allow loading pickle checkpoints (pytorch_model.bin); they can run code, so only for files you trust")
    trust_remote_code: bool = setting(False, group="loading",
        help="allow the model repository's own Python code (transformers' trust_remote_code)")
    allow_weight_mismatch: bool = setting(False, group="loading",
        help="load a model whose weights do not match its config.json (tensors missing — left randomly initialised —, "
             "unexpected or of another shape); by default that is an error naming them")
