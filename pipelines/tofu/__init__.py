"""TOFU (Maini et al. 2024) as one benchmark package: ``config`` (its settings, torch-free),
``data`` (the reader and its checks, author subsets, the never-seen reference authors),
``metrics`` (one function per TOFU metric), ``evaluation`` (the batched evaluation, forget quality
and privleak against the retain model), ``pipeline`` (the run config, the unlearning request,
the facts to trace, the retain model, the registered benchmark) and ``report``. See docs/tofu.md.
"""
