"""The uploader's side: everything that turns bytes on disk into data on the Hub, in the order a push runs.

`spec` (where a run goes) → `plan` (what changed, cut at the last complete record) → `state` (what landed, under a
lock) → `uploader` (one logdir's part of a push) → `pusher` (one push: plan → send → record, no thread) →
`targets` (what differs per destination: a repo's commits, budget, squash, pacing) → `schedule` (time: interval,
triggers, deadlines, budget waits) → `retry` (the one retry policy) → `hub` (the huggingface_hub client). `errors`
holds what they raise; `machine` lets the processes of a machine take turns. The companion process (companion/) runs
these for a live run, and for a run whose process died; a training process without a companion runs them itself. The
events side meets this one at the files on disk, the upload state, and `uploader.LiveLogdir`.
"""
