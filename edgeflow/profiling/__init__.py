"""Measurement on a runtime: where every latency, memory peak and cost figure comes from.

A run flows through these in order: :mod:`~edgeflow.targets.run` decides *where* an artifact is
timed (this process, the agent over SSH, trtexec, a phone, or an estimate when no device is attached);
:mod:`~edgeflow.profiling.profile` compiles and times it here with :mod:`~edgeflow.profiling.loop`
(the timing loop) while :mod:`~edgeflow.profiling.memory` tracks peak memory and
:mod:`~edgeflow.profiling.cost` counts MACs and params from the graph; :mod:`~edgeflow.profiling.in_turn`
times several compiled artifacts one after another, round after round, for every comparison;
:mod:`~edgeflow.backends.layers` reads a runtime's per-layer profile. The figures are
:mod:`~edgeflow.profiling.stats` records.
"""
