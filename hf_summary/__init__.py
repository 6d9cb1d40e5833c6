"""hf_summary: TensorBoard logs on the Hugging Face Hub, live, without slowing or risking the training run.

`import hf_summary` stays light: the writer (which pulls in tensorboardX, and with it torch when installed) is
imported on first use.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["HFSummaryWriter", "HubAuthError", "LocalSummaryWriter", "PushError", "ReadError", "UploadSpec",
           "__version__", "finish", "init", "log", "notebook", "read_scalars", "share"]

if TYPE_CHECKING:
    from .local_writer import LocalSummaryWriter
    from .read.frame import read_scalars
    from .run import finish, init, log
    from .sharing import share
    from .show.notebook import notebook
    from .source import ReadError
    from .upload.errors import HubAuthError, PushError
    from .upload.spec import UploadSpec
    from .writer import HFSummaryWriter

_LAZY = MappingProxyType({
    "HFSummaryWriter": ".writer",
    "HubAuthError": ".upload.errors",
    "LocalSummaryWriter": ".local_writer",
    "PushError": ".upload.errors",
    "ReadError": ".source",
    "read_scalars": ".read.frame",
    "notebook": ".show.notebook",
    "UploadSpec": ".upload.spec",
    "init": ".run",
    "log": ".run",
    "finish": ".run",
    "share": ".sharing",
})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_summary' has no attribute {name!r}")
