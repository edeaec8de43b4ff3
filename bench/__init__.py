"""Benchmarks of credman side by side with a hand-written floor and with its peers.

``python -m bench`` (or ``make bench``) times every operation of issue 9 over thousands of
calls after a warm-up, and writes ``bench/results/latest.md`` and ``latest.json``;
``--quick`` is a smoke run and ``--profile get`` profiles one operation with pyinstrument.
"""
