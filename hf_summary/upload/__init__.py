"""The uploader's side: everything that turns bytes on disk into commits on the Hub.

`spec` (where a run goes) → `plan` (what changed, cut at the last complete record) → `state` (what is committed,
under a lock) → `uploader` (one logdir's part of a commit) → `committer` (one per repo: members, schedule) →
`retry` (the one retry policy) → `hub` (the huggingface_hub client). The two sides meet only at the files on disk.
"""
