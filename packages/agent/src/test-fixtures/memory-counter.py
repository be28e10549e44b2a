#!/usr/bin/python3
"""Test workload for checkpoint/restore.

Holds MIB MiB of seeded pseudo-random data and appends a counter (1, 2, 3, ...) to COUNTER_FILE every
INTERVAL_MS. On SIGUSR1 it regenerates the data from the seed, compares it with what it holds, and
appends "OK <counter>" or "FAIL <counter> <first bad MiB>" to VERIFY_FILE. The data is only ever
generated from the seed, so a restore that lost or mixed up pages cannot pass.

Files are opened O_WRONLY|O_APPEND: CRIU does not size-check such files on restore.

usage: memory-counter.py MIB SEED INTERVAL_MS COUNTER_FILE VERIFY_FILE
"""
import os
import random
import signal
import sys
import time

MIB = 1024 * 1024


def generate(seed, mib):
    rng = random.Random(seed)
    for _ in range(mib):
        yield rng.randbytes(MIB)


def main():
    mib, seed, interval_ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    counter_path, verify_path = sys.argv[4], sys.argv[5]
    data = bytearray(mib * MIB)
    for i, chunk in enumerate(generate(seed, mib)):
        data[i * MIB:(i + 1) * MIB] = chunk

    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    counter_fd = os.open(counter_path, flags, 0o644)
    verify_fd = os.open(verify_path, flags, 0o644)
    verify_requested = False

    def on_usr1(_signum, _frame):
        nonlocal verify_requested
        verify_requested = True

    # As the init of its PID namespace, this process gets no signal it has no handler for.
    signal.signal(signal.SIGUSR1, on_usr1)

    counter = 0
    while True:
        counter += 1
        os.write(counter_fd, b'%d\n' % counter)
        if verify_requested:
            verify_requested = False
            bad = next((i for i, chunk in enumerate(generate(seed, mib)) if data[i * MIB:(i + 1) * MIB] != chunk), None)
            line = b'OK %d\n' % counter if bad is None else b'FAIL %d %d\n' % (counter, bad)
            os.write(verify_fd, line)
        time.sleep(interval_ms / 1000)


main()
