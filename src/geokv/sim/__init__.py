"""Deterministic simulation of a whole geokv Raft cluster in one process.

Every random choice comes from one seeded ``random.Random``; time is virtual (ms) and
advances only when the scheduler pops the next event, so a seed replays exactly.
``python -m geokv.sim --seed N`` replays one run, ``--seeds A..B`` runs a swarm.
"""

from __future__ import annotations
