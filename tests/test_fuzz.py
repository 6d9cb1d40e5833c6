"""Seeded fuzzing of `LocalSummaryWriter` against tensorboardX's `SummaryWriter` as the oracle.

Each case is a random sequence of `add_scalar`, `add_scalars`, `add_histogram` and `add_text` calls, built by
`random.Random(seed)` from awkward tags (non-ASCII, emoji, empty, very long, NUL, path-like...), values (NaN, inf,
huge ints, numpy scalars, tensors, strings, None...), steps and walltimes. The sequence runs once through each writer,
in fresh folders. For every call the exception type (or none) must be the same; at the end the writer thread must be
alive, nothing dropped, `close()` must raise the same, and the folders must hold the same events (the parsed records,
re-serialized deterministically, as tests/test_tensorboardx_parity.py compares them) and `scalar_dict` the same rows.

Walltimes left to the writer (`None`) are `time.time()`: they are zeroed when they fall within the case's run time;
the walltimes generated never fall there.

Deliberate difference: an `add_scalars` main tag or key with a `..` component, a leading `/` (or `\\`), an absolute
path or a `.git` component is refused by ours with ValueError, while tensorboardX writes outside its logdir. Such a
call is only made with ours (it must raise ValueError, and the sequence goes on with the writer still working).

Not generated: an `add_scalars` key that reaches a folder already written under another spelling ('a/b' then
'a//b', or main tag '' with key '' for the logdir itself). tensorboardX names event files by second and host only, so
its two FileWriters on one folder write the same file and corrupt it: there is no oracle for that.

A failing case prints its differences, then the whole sequence as Python source: paste it to reproduce
(`_set` is this module's helper).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboardX import SummaryWriter as TbxWriter
from tensorboardX.proto.event_pb2 import Event

from hf_summary import LocalSummaryWriter
from tests.test_tensorboardx_parity import _Collect, describe, read_logdir, writer_thread_died

SEEDS = [0, 1, 2, 3, 4, 5, 6, 7]
CASES_PER_SEED = 4
CALLS_PER_CASE = (30, 60)


# Generation -----------------------------------------------------------------------------------------------------------


@dataclass
class Value:
    """A generated argument: the object, and Python source that rebuilds it (for the repro)."""

    obj: Any
    src: str


def _v(obj: Any, src: str | None = None) -> Value:
    return Value(obj, src if src is not None else repr(obj))


_WORDS = ["loss", "acc", "lr", "train", "val", "x", "grad_norm", "a1", "B_2", "z"]
_NON_ASCII = ["größe", "损失", "Ωμέγα", "café", "ñ", "Пример", "日本語/タグ"]
_EMOJI = ["🔥", "😀loss", "a/🚀", "👍🏽", "🏳️‍🌈"]
_PATHLIKE = ["../x", "/abs", "..", ".", "./x", "x/..", "a/../b", ".git", "a/.git/b", "~", "~/x", "C:\\x",
             "a\\..\\b", "\\lead", "a/", "a//b", "//x", "/", "x/.", ".gitignore", "...", ".GIT"]
_ODD = ["a b", " lead", "trail ", "\t", "a\nb", "a:b", "a*b", "a?b", "a|b", "a%b", "a<b>", "a\x00b", "\x00",
        "\x7f", "a\x01b", "#", "a.b", "a-b", "[x]", "a'b", 'a"b', "\ud800"]


def gen_tag(rng: random.Random, allow_non_str: bool = True) -> Value:
    kind = rng.choices(
        ["ascii", "nested", "non_ascii", "emoji", "empty", "long", "odd", "path", "non_str"],
        weights=[6, 3, 2, 2, 1, 1, 3, 3, 1 if allow_non_str else 0])[0]
    if kind == "ascii":
        return _v(rng.choice(_WORDS))
    if kind == "nested":
        return _v("/".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 4))))
    if kind == "non_ascii":
        return _v(rng.choice(_NON_ASCII))
    if kind == "emoji":
        return _v(rng.choice(_EMOJI))
    if kind == "empty":
        return _v("")
    if kind == "long":
        n = rng.choice([200, 255, 256, 300, 1000, 10_000])
        c = rng.choice(["x", "é", "a/"])
        return _v(c * n, f"{c!r} * {n}")
    if kind == "odd":
        return _v(rng.choice(_ODD))
    if kind == "path":
        return _v(rng.choice(_PATHLIKE))
    return rng.choice([_v(None), _v(3), _v(b"bytes"), _v(np.str_("np"), "np.str_('np')"), _v(1.5)])


def _float(rng: random.Random) -> Value:
    x = rng.choice([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, 1e-300, -0.0, 0.0, 1e39,
                    -1e39, 3.4028235e38, 0.1, rng.uniform(-10, 10), rng.uniform(-1e6, 1e6)])
    if math.isnan(x):
        return _v(x, "float('nan')")
    if math.isinf(x):
        return _v(x, "float('inf')" if x > 0 else "float('-inf')")
    return _v(x)


def _int(rng: random.Random) -> Value:
    x = rng.choice([0, 1, -1, 7, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64,
                    10**30, 10**400, -(10**400), rng.randint(-1000, 1000)])
    if abs(x) > 10**100:
        return _v(x, "10**400" if x > 0 else "-(10**400)")
    return _v(x)


_NP_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint64", "bool"]
_TORCH_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool"]


def _np_scalar(rng: random.Random) -> Value:
    dtype = rng.choice(_NP_DTYPES)
    if dtype.startswith("float"):
        x = rng.choice([1.5, -2.25, float("nan"), float("inf"), 65504.0, 1e-8, -0.0])
    elif dtype == "bool":
        x = rng.choice([True, False])
    elif dtype.startswith("uint"):
        x = rng.choice([0, 3, int(np.iinfo(dtype).max)])
    else:
        x = rng.choice([0, -3, int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)])
    return _v(np.dtype(dtype).type(x), f"np.{dtype}({x!r})".replace("nan", "float('nan')").replace(
        "inf)", "float('inf'))"))


def _num_src(x: Any) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "float('nan')"
    if isinstance(x, float) and math.isinf(x):
        return "float('inf')" if x > 0 else "float('-inf')"
    return repr(x)


def _tensor_like(rng: random.Random) -> Value:
    shape = rng.choice([(), (1,), (1, 1), (2,), (0,)])
    x = rng.choice([1.5, -3.0, float("nan"), float("inf"), 0.0, 7, True])
    if rng.random() < 0.5:
        dtype = rng.choice(_TORCH_DTYPES)
        if dtype in ("int64", "int32", "uint8") and isinstance(x, float) and not math.isfinite(x):
            x = 3
        if dtype == "uint8" and x < 0:
            x = -x
        t = torch.full(shape, x, dtype=getattr(torch, dtype))
        src = f"torch.full({shape!r}, {_num_src(x)}, dtype=torch.{dtype})"
        if rng.random() < 0.2 and t.is_floating_point():
            t.requires_grad_(True)
            src += ".requires_grad_(True)"
        return _v(t, src)
    dtype = rng.choice(_NP_DTYPES)
    if not dtype.startswith("float") and isinstance(x, float) and not math.isfinite(x):
        x = 3
    return _v(np.full(shape, x, dtype=dtype), f"np.full({shape!r}, {_num_src(x)}, dtype={dtype!r})")


def gen_scalar(rng: random.Random) -> Value:
    kind = rng.choices(["float", "int", "bool", "np", "tensor", "str", "None", "list", "complex"],
                       weights=[6, 4, 1, 4, 4, 1, 1, 1, 1])[0]
    if kind == "float":
        return _float(rng)
    if kind == "int":
        return _int(rng)
    if kind == "bool":
        return _v(rng.choice([True, False]))
    if kind == "np":
        return _np_scalar(rng)
    if kind == "tensor":
        return _tensor_like(rng)
    if kind == "str":
        return _v(rng.choice(["1.5", "abc", "", "nan"]))
    if kind == "None":
        return _v(None)
    if kind == "list":
        return _v(rng.choice([[1.5], [], [1, 2], [[2.0]], (3.0,)]))
    return _v(rng.choice([1 + 2j, 0j]), None)


def gen_step(rng: random.Random) -> Value:
    kind = rng.choices(["None", "small", "extreme", "float", "np", "other"], weights=[3, 5, 3, 2, 2, 1])[0]
    if kind == "None":
        return _v(None)
    if kind == "small":
        return _v(rng.randint(-5, 1000))
    if kind == "extreme":
        x = rng.choice([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -(2**64), 10**30, 2**62])
        return _v(x)
    if kind == "float":
        return rng.choice([_v(1.5), _v(-2.7), _v(1e20), _v(float("nan"), "float('nan')"),
                           _v(float("inf"), "float('inf')"), _v(9.223372036854776e18), _v(0.0)])
    if kind == "np":
        return rng.choice([_v(np.int64(7), "np.int64(7)"), _v(np.int32(-3), "np.int32(-3)"),
                           _v(np.uint64(2**64 - 1), "np.uint64(2**64 - 1)"), _v(np.float32(2.5), "np.float32(2.5)"),
                           _v(np.int64(2**63 - 1), "np.int64(2**63 - 1)"), _v(np.uint8(255), "np.uint8(255)")])
    return rng.choice([_v(True), _v("3"), _v("x"), _v(torch.tensor(4), "torch.tensor(4)"), _v([1]),
                       _v(np.array(5), "np.array(5)")])


def gen_walltime(rng: random.Random) -> Value:
    """Never within [1e9, 1e10]: walltimes there are taken for `time.time()` and zeroed."""
    kind = rng.choices(["None", "float", "special", "int", "other"], weights=[6, 3, 2, 1, 1])[0]
    if kind == "None":
        return _v(None)
    if kind == "float":
        return _v(rng.choice([0.0, 1.0, 12.5, -5.5, 1e300, 5e-324, -0.0, 1e12, rng.uniform(0, 1e6)]))
    if kind == "special":
        return rng.choice([_v(float("nan"), "float('nan')"), _v(float("inf"), "float('inf')"),
                           _v(float("-inf"), "float('-inf')")])
    if kind == "int":
        x = rng.choice([0, 5, -7, 2**53 + 1, 2**70, 10**400])
        return _v(x, "10**400" if x == 10**400 else None)
    return rng.choice([_v("abc"), _v("12.5"), _v(True), _v(np.float64(12.5), "np.float64(12.5)"),
                       _v(np.float32(2.5), "np.float32(2.5)"), _v(torch.tensor(3.0), "torch.tensor(3.0)"),
                       _v([1.0]), _v(np.int64(4), "np.int64(4)")])


def gen_hist_values(rng: random.Random) -> Value:
    kind = rng.choices(["np", "torch", "other"], weights=[7, 2, 1])[0]
    if kind == "other":
        return rng.choice([_v(2.5), _v("abc"), _v(None), _v([1.0, 2.0]), _v([]), _v(np.array(3.0), "np.array(3.0)"),
                           _v(np.array([1 + 2j]), "np.array([1 + 2j])"), _v(float("nan"), "float('nan')")])
    shape = rng.choice([(0,), (1,), (5,), (20,), (3, 4), (2, 0), (2, 3, 2), (1000,)])
    n = int(np.prod(shape))
    seed = rng.randrange(2**32)
    scale = rng.choice([1.0, 1e-30, 1e30, 1000.0])
    special = rng.choice([None, None, "nan", "inf", "-inf", "all_nan", "same"])
    if kind == "torch":
        dtype = rng.choice(["float32", "float64", "int64", "float16"])
    else:
        dtype = rng.choice(_NP_DTYPES)
    src = f"np.random.default_rng({seed}).standard_normal({n}) * {scale!r}"
    data = np.random.default_rng(seed).standard_normal(n) * scale
    if special is not None and n:
        fill = {"nan": "np.nan", "inf": "np.inf", "-inf": "-np.inf", "all_nan": "np.nan", "same": "2.0"}[special]
        index = "slice(None)" if special in ("all_nan", "same") else str(rng.randrange(n))
        data[eval(index)] = eval(fill)
        src = f"_set({src}, {index}, {fill})"
    if dtype in ("int8", "int16", "int32", "int64", "uint8", "uint64", "bool"):
        with np.errstate(invalid="ignore", over="ignore"):
            data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
            src = f"np.nan_to_num({src}, nan=0.0, posinf=1.0, neginf=-1.0)"
            if dtype != "bool":
                info = np.iinfo(dtype)
                data = np.clip(data, info.min, info.max)
                src = f"np.clip({src}, {info.min}, {info.max})"
    data = data.astype(dtype).reshape(shape)
    src = f"({src}).astype({dtype!r}).reshape({shape!r})"
    if kind == "torch":
        return _v(torch.from_numpy(data.copy()), f"torch.from_numpy({src})")
    return _v(data, src)


def _set(array: np.ndarray, index: Any, value: float) -> np.ndarray:
    array[index] = value
    return array


def gen_text(rng: random.Random) -> Value:
    return rng.choice([
        _v("hello"), _v("größe 损失 🔥"), _v(""), _v("y" * 100_000, "'y' * 100_000"), _v("a\x00b"), _v("\ud800"),
        _v("| a | b |\n|---|---|\n| 1 | 2 |"), _v(3), _v(None), _v(b"abc"), _v(np.str_("np"), "np.str_('np')"),
        _v(1.5), _v(["a"]), _v("  spaced  "), _v("\n\n"),
    ])


@dataclass
class Call:
    method: str
    args: list[Value]
    kwargs: dict[str, Value] = field(default_factory=dict)
    deliberate: bool = False  # ours refuses it on purpose: not made with tensorboardX

    def run(self, writer: Any) -> Any:
        return getattr(writer, self.method)(*(a.obj for a in self.args), **{k: v.obj for k, v in self.kwargs.items()})

    def source(self) -> str:
        parts = [a.src for a in self.args] + [f"{k}={v.src}" for k, v in self.kwargs.items()]
        text = f"w.{self.method}({', '.join(parts)})"
        return text if len(text) <= 2000 else text[:2000] + " ...)"


def _refused_sub_run(name: Any) -> bool:
    """A name that ours refuses in `add_scalars` on purpose (see the module docstring)."""
    if not isinstance(name, str):
        return False
    parts = name.replace("\\", "/").split("/")
    return os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or ".git" in parts


def gen_sequence(rng: random.Random) -> list[Call]:
    tag_pool = [gen_tag(rng) for _ in range(rng.randint(2, 6))]  # tags repeat: several events into one tag/run

    def tag(allow_non_str: bool = True) -> Value:
        return rng.choice(tag_pool) if rng.random() < 0.5 else gen_tag(rng, allow_non_str)

    # tensorboardX names its event files by second and host only: two of its FileWriters on one folder (reached
    # through two spellings, e.g. 'a/b' and 'a//b', or '' + '' for the logdir itself) write the same file at once and
    # corrupt it. No oracle there: a key that would alias a folder already written is left out.
    folders = {"L": "L"}

    def aliases(main: Any, key: Any) -> bool:
        if not isinstance(main, str) or not isinstance(key, str):
            return False
        raw = os.path.join("L", main, key)
        folder = os.path.normpath(raw)
        if folders.setdefault(folder, raw) != raw:
            return True
        return False

    calls: list[Call] = []
    for _ in range(rng.randint(*CALLS_PER_CASE)):
        method = rng.choices(["add_scalar", "add_scalars", "add_histogram", "add_text"], weights=[5, 3, 2, 2])[0]
        args: list[Value]
        if method == "add_scalar":
            args = [tag(), gen_scalar(rng)]
        elif method == "add_scalars":
            main = tag()
            keys = [tag(allow_non_str=rng.random() < 0.1) for _ in range(rng.randint(1, 4))]
            values = {k.obj: gen_scalar(rng) for k in keys}
            if not (_refused_sub_run(main.obj) or any(_refused_sub_run(k) for k in values)):
                values = {k: v for k, v in values.items() if not aliases(main.obj, k)}
            src = "{" + ", ".join(f"{_src_of(keys, k)}: {v.src}" for k, v in values.items()) + "}"
            args = [main, _v({k: v.obj for k, v in values.items()}, src)]
        elif method == "add_histogram":
            args = [tag(), gen_hist_values(rng)]
        else:
            args = [tag(), gen_text(rng)]
        kwargs: dict[str, Value] = {}
        step, walltime = gen_step(rng), gen_walltime(rng)
        positional = rng.random() < 0.5
        if method == "add_histogram":  # (tag, values, global_step, bins, walltime, max_bins)
            args.append(step)
            if rng.random() < 0.2:
                kwargs["bins"] = rng.choice([_v("auto"), _v(5), _v("fd")])
            kwargs["walltime"] = walltime
        elif positional:
            args += [step, walltime]
        else:
            kwargs = {"global_step": step, "walltime": walltime}
        deliberate = method == "add_scalars" and (
            _refused_sub_run(args[0].obj) or any(_refused_sub_run(k) for k in args[1].obj))
        calls.append(Call(method, args, kwargs, deliberate))
    return calls


def _src_of(keys: list[Value], obj: Any) -> str:
    for k in keys:
        if k.obj is obj or (type(k.obj) is type(obj) and k.obj == obj):
            return k.src
    return repr(obj)


# Running --------------------------------------------------------------------------------------------------------------


@dataclass
class SequenceOutcome:
    errors: list[str | None]  # per call: the exception type raised, or None ("skipped" for a call not made)
    messages: list[str]
    close_error: str | None
    disk: dict[str, Any]
    scalar_dict: dict[str, str]
    dropped: list[str]
    thread_died: bool


def _in_window(walltime: Any, window: tuple[float, float]) -> bool:
    try:
        return window[0] - 1 <= float(walltime) <= window[1] + 1
    except Exception:
        return False


def _zero_now(disk: dict[str, Any], window: tuple[float, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in disk.items():
        if key.endswith("<events>"):
            events = []
            for raw in value:
                event = Event.FromString(raw)
                if _in_window(event.wall_time, window):
                    event.wall_time = 0
                    raw = event.SerializeToString(deterministic=True)
                events.append(raw)
            value = events
        out[key] = value
    return out


def run_sequence(cls: type, logdir: Path, calls: list[Call]) -> SequenceOutcome:
    collect = _Collect()
    ours_logger = logging.getLogger("hf_summary")
    level = ours_logger.level
    ours_logger.addHandler(collect)
    ours_logger.setLevel(logging.WARNING)
    start = time.time()
    try:
        writer = cls(logdir=str(logdir)) if cls is TbxWriter else cls(str(logdir))
        errors: list[str | None] = []
        messages: list[str] = []
        for call in calls:
            if call.deliberate and cls is TbxWriter:
                errors.append("skipped")
                messages.append("")
                continue
            try:
                call.run(writer)
            except Exception as error:
                errors.append(type(error).__name__)
                messages.append(str(error)[:300])
            else:
                errors.append(None)
                messages.append("")
        writer.add_scalar("sentinel", 1.0, 1, walltime=1.0)  # the writer must still work after the sequence
        thread_died = writer_thread_died(writer)
        window = (start, time.time())
        scalar_dict = {
            os.path.relpath(key, logdir): repr([[0 if _in_window(t, window) else t, s, v] for t, s, v in rows])
            for key, rows in writer.scalar_dict.items()
        }
        close_error = None
        try:
            writer.close()
        except Exception as error:
            close_error = type(error).__name__
        window = (start, time.time())
        dropped = [m for m in collect.messages if "Could not write" in m]
        disk = _zero_now(read_logdir(logdir, keep_walltime=True), window)
        return SequenceOutcome(errors, messages, close_error, disk, scalar_dict, dropped, thread_died)
    finally:
        ours_logger.removeHandler(collect)
        ours_logger.setLevel(level)


def _repro(calls: list[Call], upto: int | None = None) -> str:
    lines = [f"    {c.source()}" + ("  # refused by ours on purpose" if c.deliberate else "")
             for c in calls[:upto]]
    return "w = Writer(logdir)\n" + "\n".join(lines) + "\nw.close()"


_CASES = [pytest.param(seed, case, id=f"seed{seed}-case{case}") for seed in SEEDS for case in range(CASES_PER_SEED)]


@pytest.mark.parametrize(("seed", "case"), _CASES)
def test_fuzz_parity(tmp_path: Path, seed: int, case: int) -> None:
    rng = random.Random(seed)
    for _ in range(case):  # case k is the k-th sequence the seed's generator makes
        gen_sequence(rng)
    calls = gen_sequence(rng)
    with np.errstate(all="ignore"):
        ours = run_sequence(LocalSummaryWriter, tmp_path / "ours", calls)
        theirs = run_sequence(TbxWriter, tmp_path / "tbx", calls)

    problems = []
    for i, call in enumerate(calls):
        if call.deliberate:
            if ours.errors[i] != "ValueError":
                problems.append(f"call {i}: {call.source()}\n  refused on purpose: ours must raise ValueError, "
                                f"raised {ours.errors[i]}")
        elif ours.errors[i] != theirs.errors[i]:
            problems.append(f"call {i}: {call.source()}\n  tensorboardX raises {theirs.errors[i]} "
                            f"({theirs.messages[i]!r}), ours {ours.errors[i]} ({ours.messages[i]!r})")
    if ours.thread_died:
        problems.append("our writer thread died")
    if ours.dropped:
        problems.append(f"accepted at the call, then dropped: {ours.dropped}")
    if ours.close_error != theirs.close_error:
        problems.append(f"close() raises {ours.close_error} with ours, {theirs.close_error} with tensorboardX")
    if ours.disk.keys() != theirs.disk.keys():
        only_ours = sorted(ours.disk.keys() - theirs.disk.keys())
        only_theirs = sorted(theirs.disk.keys() - ours.disk.keys())
        problems.append(f"files differ: only ours {only_ours!r}, only tensorboardX {only_theirs!r}")
    for key in sorted(ours.disk.keys() & theirs.disk.keys()):
        if ours.disk[key] != theirs.disk[key]:
            mine, other = ours.disk[key], theirs.disk[key]
            if isinstance(mine, list) and isinstance(other, list):
                pairs = enumerate(zip(mine, other, strict=False))
                first = next((j for j, (a, b) in pairs if a != b), min(len(mine), len(other)))
                problems.append(
                    f"{key!r} differs ({len(mine)} events ours, {len(other)} tensorboardX), first at event {first}:\n"
                    f"  ours {describe({key: mine[first:first + 2]})}\n"
                    f"  tbX  {describe({key: other[first:first + 2]})}")
            else:
                problems.append(f"{key!r} differs")
    if ours.scalar_dict != theirs.scalar_dict:
        keys = sorted(set(ours.scalar_dict) | set(theirs.scalar_dict))
        diff = {k: (ours.scalar_dict.get(k), theirs.scalar_dict.get(k)) for k in keys
                if ours.scalar_dict.get(k) != theirs.scalar_dict.get(k)}
        problems.append(f"scalar_dict differs (ours, tensorboardX): {str(diff)[:2000]}")
    assert not problems, (f"seed {seed} case {case}: {len(problems)} difference(s)\n" + "\n".join(problems)
                          + "\n\nsequence:\n" + _repro(calls))


def test_generator_is_deterministic() -> None:
    """The same seed makes the same sequence: a failing case id reproduces."""
    a = [c.source() for c in gen_sequence(random.Random(123))]
    b = [c.source() for c in gen_sequence(random.Random(123))]
    assert a == b


def test_generator_covers_the_inputs() -> None:
    """The seeds used reach the awkward inputs the fuzzing is for."""
    seen: set[str] = set()
    for seed in SEEDS:
        rng = random.Random(seed)
        for _ in range(CASES_PER_SEED):
            for call in gen_sequence(rng):
                seen.add(call.method)
                if call.deliberate:
                    seen.add("deliberate")
                text = call.source()
                for marker in ("nan", "inf", "torch.", "np.", "\\x00", "9223372036854775808",
                               "None", "'../x'", "'/abs'", "'🔥'", "''"):
                    if marker in text:
                        seen.add(marker)
    expected = {"add_scalar", "add_scalars", "add_histogram", "add_text", "deliberate", "nan", "inf", "torch.", "np.",
                "\\x00", "9223372036854775808", "None", "''"}
    assert expected <= seen, f"not generated: {expected - seen}"
