"""Runs as data: scalars read back from a logdir, a repo or a bucket, as TensorBoard reads them, fast.

`frame.read_scalars` (also `hf_summary.read_scalars`) is the entry point; `scan` decodes event files in bulk, `runs`
keeps TensorBoard's semantics, `fetch` mirrors a repo's or bucket's event files incrementally (the mirror
`hf-summary show` serves). Nothing here imports `show`: reading needs no TensorBoard server.
"""
