"""Runs as data: scalars read back from a logdir, a repo or a bucket, as TensorBoard reads them, fast.

`frame.read_scalars` (also `hf_summary.read_scalars`) is the entry point; `scan` decodes event files in bulk, `runs`
keeps TensorBoard's semantics, `fetch` mirrors a repo's or bucket's event files incrementally, `notebook` shows
TensorBoard inline.
"""
