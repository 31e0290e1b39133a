"""Unit tests, by concern, mirroring queue_pump/: in the test process, in fake time or against
servers on loopback it starts itself. Real pump processes are in tests/process/."""
