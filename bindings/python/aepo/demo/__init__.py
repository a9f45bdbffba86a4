"""`make demo`: GRPO against AEPO on a verifiable digit task, with entropy held at chosen targets.

Run ``python -m aepo.demo --help`` for the options.
"""
