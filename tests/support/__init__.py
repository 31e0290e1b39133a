"""What the tests share, defined once: the environment and fake time (env.py), free ports and
HTTP to loopback servers (net.py), the real pump as a child process and waiting on events
(proc.py), the runner double (runner_double.py), the reference runner as a process
(reference_process.py), and the fault scenarios the fault tests and bench/ both run
(fault_scenarios.py)."""
