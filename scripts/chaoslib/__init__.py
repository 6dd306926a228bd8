"""The chaos harness of agent-dispatcher: private Redis servers, real workers, faults, ledgers and verdicts.

Run it with ``scripts/chaos``; the quick tier also runs inside the test suite
(``tests/integration/test_chaos_quick.py``). Every process it starts is recorded by PID and only those are
stopped; every loop is bounded by a count and a deadline.
"""
