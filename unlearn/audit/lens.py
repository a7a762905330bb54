"""The logit lens: how likely each layer's residual stream already makes the forget answer.

nostalgebraist 2020; Patil, Hase & Bansal 2023 recover ~38 % of facts deleted by editing from
intermediate layers. For each fact (a rendered prompt and its answer), the output of every decoder
layer at the prompt's last position goes through the model's final norm and output head; the
value is the probability of the answer's first token (the token that follows the prompt in the
tokenization of ``prompt + answer``). At the last layer this is the model's own next-token
probability exactly. Did unlearning take the fact out of the located layers, or only off the
output? A forgotten fact stays low at every layer; a hidden one rises in the middle and falls at
the end.
"""

from __future__ import annotations

from typing import Sequence

from tracing.errors import AmnesiaError

#: Where the final norm sits in the architectures transformers ships (Llama/OLMo/Mistral/Qwen: model.norm).
FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm", "model.decoder.final_layer_norm")


def final_norm(model):
    """The module applied between the last decoder layer and the output head."""
    for path in FINAL_NORMS:
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if module is not None:
            return module
    raise AmnesiaError(f"{type(model).__name__}: no final norm at {', '.join(FINAL_NORMS)}: the logit lens needs it")


def answer_tokens(tokenizer, prompt: str, answer: str) -> tuple[list[int], int]:
    """``(prompt ids, the answer's first token id)`` as ``prompt + answer`` tokenizes (the prompt/answer
    split every NLL here uses: :func:`unlearn.eval.nll.completion_labels`)."""
    from ..eval.nll import IGNORE, completion_labels

    ids, labels = completion_labels(tokenizer, prompt, answer)
    first = next((i for i, label in enumerate(labels) if label != IGNORE), None)
    if first is None:
        raise AmnesiaError(f"logit lens: the answer {answer[:40]!r} adds no token to its prompt")
    return ids[:first], ids[first]


def layer_probabilities(model, tokenizer, facts: Sequence[tuple[str, str]]) -> list[list[float]]:
    """Per fact, per decoder layer: the probability of the answer's first token read from that layer's output."""
    import torch

    from ..params import find_decoder_layers

    _, layers = find_decoder_layers(model)
    norm, head = final_norm(model), model.get_output_embeddings()
    device = next(model.parameters()).device
    captured: list = []

    def keep(_module, _inputs, output):
        captured.append((output[0] if isinstance(output, tuple) else output)[:, -1])

    handles = [layer.register_forward_hook(keep) for layer in layers]
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for prompt, answer in facts:
                ids, target = answer_tokens(tokenizer, prompt, answer)
                captured.clear()
                model(input_ids=torch.tensor([ids], device=device))
                probs = []
                for hidden in captured:
                    logits = head(norm(hidden)).float()
                    probs.append(torch.softmax(logits, dim=-1)[0, target].item())
                out.append(probs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


def mean_by_layer(rows: Sequence[Sequence[float]]) -> list[float]:
    """The mean over facts of each layer's probability."""
    if not rows:
        return []
    return [sum(r[i] for r in rows) / len(rows) for i in range(len(rows[0]))]
