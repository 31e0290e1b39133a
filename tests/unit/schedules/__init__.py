"""schedules/: the schedules file and the firing of its windows."""
