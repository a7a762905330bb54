"""SemEval-2025 Task 4 as a benchmark (``benchmark: semeval``, the default of ``amnesia run``).

Modules: :mod:`~pipelines.semeval.config` (:class:`SemEvalRunConfig`: the shared sections, the
data or the synthetic world, the evaluation settings), :mod:`~pipelines.semeval.pipeline` (the
shared stages with the official scores before and after; the registered benchmark) and
:mod:`~pipelines.semeval.report` (the scores tables, the controls table, the notes, the
headline). The official metrics and MMLU are :mod:`unlearn.eval`, which the unlearning stage's
checkpoint selection and ``amnesia evaluate`` use too; the data layout is the unlearning request
format every benchmark is converted to (:mod:`unlearn.data`).
"""
