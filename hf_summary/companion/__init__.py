"""The companion: the process beside the training process. It writes the event files of the process's writers,
runs their pushes, and pushes what is left when the training process ends without closing them.

The first writer of a training process starts it; one serves every writer of the process. A writer hands each event
to it through shared memory (events/handoff.py); the companion drains the rings into event files
(`rings`, with events/drain.py), runs the schedule of each live logdir (`pushes`, with upload/), and answers the
writer's handle (`client.RemoteMember`: `writer.scheduler`). The training process only hands off: it makes no
request to the Hub for a push, and runs no Xet work.

SIGKILL, a segfault, `os._exit`, SIGTERM without `push_on_sigterm`, a notebook kernel dying: none of them runs
`close()`, but the companion sees its end of the socket close, writes what the rings hold and makes the final push
(`main`). Where no companion can run (`ring_size=None`, a forked child, a platform that forbids it), or if it dies,
the same schedule runs in a thread of the training process, which also takes the rings over.

- `protocol`: the messages, and a push's outcome across the socket;
- `client`: the training process's side (the link, `watch`, `join`, `RemoteMember`);
- `rings`: the rings, in the companion;
- `pushes`: the live logdirs' schedules, in the companion;
- `main`: the companion's loop and its last push.
"""

from .client import CompanionGone, NoCompanionInChild, RemoteMember, Watch, companion, current_pid, join, watch
from .main import LOG_NAME

__all__ = ["LOG_NAME", "CompanionGone", "NoCompanionInChild", "RemoteMember", "Watch", "companion", "current_pid",
           "join", "watch"]
