#!/usr/bin/python3
"""Two-process test workload for checkpoint/restore.

The parent forks a child; every INTERVAL_MS the child writes its next counter (1, 2, 3, ...) into a
pipe, and the parent appends each number it reads to COUNTER_FILE. A restore that lost the pipe's
buffered data, or either process, breaks the sequence or stops it.

usage: pipe-counter.py INTERVAL_MS COUNTER_FILE
"""
import os
import sys
import time


def child(write_fd, interval_ms):
    counter = 0
    while True:
        counter += 1
        os.write(write_fd, b'%d\n' % counter)
        time.sleep(interval_ms / 1000)


def parent(read_fd, counter_path):
    out = os.open(counter_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pending = b''
    while True:
        chunk = os.read(read_fd, 4096)
        if not chunk:
            sys.exit(1)  # the child is gone
        pending += chunk
        *lines, pending = pending.split(b'\n')
        for line in lines:
            os.write(out, line + b'\n')


def main():
    interval_ms, counter_path = int(sys.argv[1]), sys.argv[2]
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:
        os.close(read_fd)
        child(write_fd, interval_ms)
    os.close(write_fd)
    parent(read_fd, counter_path)


main()
