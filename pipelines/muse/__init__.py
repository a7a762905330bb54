"""MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models"), one
benchmark package: the reader (:mod:`.data`), the settings (:mod:`.config`), one function per metric
(:mod:`.metrics`), the batched evaluation (:mod:`.evaluation`) and ``amnesia evaluate-muse``
(:mod:`.command`). docs/muse.md."""
