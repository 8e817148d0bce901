"""Percentage buckets (django_zkflags/rules.py) in another OS process.

The rest of the rules' tests are in tests/unit/test_rules.py; this one starts a child
process, so it belongs to the system tier.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid

from django_zkflags.rules import bucket

# The same anonymous ids as tests/unit/test_rules.py (the same seed, the first 200).
_rng = random.Random(20240611)
ANONYMOUS_IDS = [str(uuid.UUID(int=_rng.getrandbits(128), version=4)) for _ in range(200)]


def test_same_answers_in_another_process_with_another_hash_seed():
    # Python's hash() is salted per process; the rollout must not be.
    sample = [("rollout", pk) for pk in range(1, 200)] + [
        ("rollout", a) for a in ANONYMOUS_IDS[:200]
    ]
    here = [bucket(name, identity) for name, identity in sample]
    code = (
        "import json, sys\n"
        "from django_zkflags.rules import bucket\n"
        "sample = json.load(sys.stdin)\n"
        "print(json.dumps([bucket(n, i) for n, i in sample]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == here
