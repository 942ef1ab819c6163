"""Seeded, structure-aware fuzzer of ``discmaker check``.

Threat model: a received disc is hostile. No input may end in an internal error, a traceback,
a hang, or work (time, memory) decided by untrusted content.

Run ``python -m fuzz --cases 300 --seed 1 --out fuzz-out``; see ``fuzz/__main__.py``.
"""
