"""The training process's side: everything that turns an `add_*` call into bytes in an event file on disk.

`queue` (the hand-off and the writer thread) → `encoding` (scalar events by hand) → `records` (framing, checks,
file names); `tbx` is the one adapter for tensorboardX's internals.
"""
