"""loop/: the loops in fake time, the runner client, failures, backoff, the budget, waits."""
