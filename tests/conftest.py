import os
import random

import pytest


@pytest.fixture
def seed(request):
    """A per-test seed, printed so a failing randomized test can be replayed (SNNC_SEED=...)."""
    value = int(os.environ.get("SNNC_SEED", random.SystemRandom().randrange(1 << 31)))
    print(f"\n[{request.node.nodeid}] seed={value} (replay with SNNC_SEED={value})")
    return value
