#!/usr/bin/env python3
"""Benchmark workload: heartbeat-workload.py OUT_FILE MIB

Holds MIB MiB of non-zero memory (a 1 MiB random block repeated, so every page is present and
CRIU has to dump it) and appends one line with time.time() to OUT_FILE every 10 ms. The benchmark
reads the file afterwards: the longest gap between consecutive lines is how long the workload did
not run (its downtime), measured the same way whichever method migrated it.
"""
import os
import sys
import time

out_file, mib = sys.argv[1], int(sys.argv[2])
block = os.urandom(1024 * 1024)
data = bytearray(block) * mib
print("holding %d MiB" % mib, flush=True)

with open(out_file, "a", buffering=1) as f:
    while True:
        f.write("%.6f\n" % time.time())
        time.sleep(0.01)
