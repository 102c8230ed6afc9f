"""The fair share of accounts per instance covers every account and differs by at most one between instances."""

from __future__ import annotations

from crm_server.telegram.shares import fair_share


def test_shares_cover_every_account() -> None:
    for accounts in range(0, 40):
        for instances in range(1, 6):
            share = fair_share(accounts, instances)
            assert share * instances >= accounts
            assert share - 1 < accounts / instances or accounts == 0


def test_an_instance_alone_runs_everything_and_no_accounts_need_no_share() -> None:
    assert fair_share(20, 1) == 20
    assert fair_share(0, 3) == 0
    assert fair_share(20, 3) == 7
    assert fair_share(5, 0) == 5  # no live instance seen yet: this one counts itself
