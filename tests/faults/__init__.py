"""The fault suite: real kills, Ctrl-C, full and read-only disks, damage and fuzzing (`make faults`)."""
