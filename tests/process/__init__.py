"""The real pump process over loopback: exit codes, signals, health, faults, hostile answers,
what it loads. Each test starts processes; all are marked e2e."""
