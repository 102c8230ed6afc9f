"""How many accounts one of several crm_server instances should run: its fair share, pure and alone here.

An instance above its share hands accounts over one per round; one below takes unheld ones up to it. With the
ceiling, the shares of k instances always cover n accounts, so none is left unheld once they settle.
"""

from __future__ import annotations

import math


def fair_share(accounts: int, instances: int) -> int:
    """⌈accounts / instances⌉ (every account, when this instance is alone)."""
    if accounts <= 0:
        return 0
    return math.ceil(accounts / max(1, instances))
