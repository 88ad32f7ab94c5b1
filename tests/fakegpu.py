"""A second device for CPU-only test machines: ``fakegpu``, whose tensors hold CPU data but
report ``device == "fakegpu:0"``, and whose operations refuse to mix with CPU tensors as CUDA
does.

Why not ``FakeTensorMode`` or ``meta``: both drop the values, so every data-dependent step of
training (``float(loss)``, ``bool(mask.any())``, networkx over learned weights, early stopping)
raises before the first device bug is reached, and ``FakeTensorMode``'s fake ``cuda`` tensors
abort the process in ``backward`` on a CPU-only build (no CUDA device guard). Here the values
are real, so a whole ``fit`` / ``predict`` / ``save`` / ``load`` runs, and only the device
bookkeeping is simulated:

- the device is torch's ``PrivateUse1`` backend renamed ``fakegpu``, with the Python device
  guard torch ships for Python backends (autograd needs one for a non-CPU device);
- every tensor on it is a wrapper subclass around a CPU tensor; a dispatch mode runs each aten
  operation on the CPU data after checking devices the way CUDA kernels do: tensors of more
  than zero dimensions on two devices raise :class:`DeviceMismatch`, except in ``copy_`` /
  ``to`` and the CPU indices of advanced indexing (CUDA accepts both); a random draw whose
  generator is on the other device raises as CUDA's ``Expected a 'cuda' device type for
  generator``;
- ``torch.Generator(device="fakegpu")`` is patched for the context to a CPU generator that
  reports the fake device.

Use::

    with fake_gpu():
        learner = create("gcnet", tasks, device="fakegpu").fit(train)

Host synchronisations (``.item()``, ``.tolist()``) work as on CUDA. ``.numpy()`` raises as on
CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

NAME = "fakegpu"
aten = torch.ops.aten


class DeviceMismatch(RuntimeError):
    """Tensors of two devices met in one operation (CUDA raises a RuntimeError)."""


def _register() -> torch.device:
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    if torch._C._get_privateuse1_backend_name() != NAME:
        _setup_privateuseone_for_python_backend(NAME)
    return torch.device(NAME, 0)


DEVICE = _register()


class FakeGPUTensor(torch.Tensor):
    """CPU data ``elem`` that reports ``device == fakegpu:0``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> FakeGPUTensor:
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=DEVICE,
            requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    def __repr__(self) -> str:  # type: ignore[override]
        return f"FakeGPUTensor({self.elem!r})"

    def tolist(self) -> Any:  # type: ignore[override]
        SYNCS["tolist"] = SYNCS.get("tolist", 0) + 1
        return self.elem.tolist()    # CUDA copies to the host and returns the list

    def __reduce_ex__(self, proto: Any) -> Any:
        # torch.save of a CUDA tensor stores its data; read back with map_location="cpu" it is
        # a CPU tensor, as the plain CPU tensor stored here
        return self.elem.detach().__reduce_ex__(proto)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        raise RuntimeError(f"{func}: a fakegpu tensor used outside fake_gpu()")


class _Generator(torch._C.Generator):
    """A CPU generator that reports ``fakegpu`` when created for it."""

    def __new__(cls, device: Any = "cpu") -> _Generator:
        g = super().__new__(cls)
        g._fake = torch.device(device).type == NAME
        return g

    def __init__(self, device: Any = "cpu") -> None:
        pass

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return DEVICE if self._fake else torch.device("cpu")


def _device_of(t: torch.Tensor) -> torch.device:
    return DEVICE if isinstance(t, FakeGPUTensor) else t.device


_COPY_OPS = {aten.copy_, aten._to_copy, aten.lift_fresh, aten.lift_fresh_copy,
             aten._foreach_copy_}
_INDEX_OPS = {aten.index, aten.index_put_, aten.index_put, aten._index_put_impl_,
              aten._unsafe_index, aten._unsafe_index_put}


def _check(func: Any, args: tuple, kwargs: dict, target: torch.device) -> None:
    packet = func.overloadpacket
    if packet in _COPY_OPS:
        return
    flat, _ = tree_flatten((args, kwargs))
    devices = {_device_of(a) for a in flat if isinstance(a, torch.Tensor) and a.dim() > 0}
    if packet in _INDEX_OPS and args and isinstance(args[0], torch.Tensor):
        # CUDA accepts CPU index tensors; values and self must share a device
        idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
        idx_ids = {id(i) for i in (idx or ()) if isinstance(i, torch.Tensor)}
        devices = {_device_of(a) for a in flat if isinstance(a, torch.Tensor) and a.dim() > 0
                   and not (id(a) in idx_ids and a.device.type == "cpu")}
    if kwargs.get("device") is not None and devices - {target}:
        devices.add(target)
    if len(devices) > 1:
        raise DeviceMismatch(
            f"{func}: expected all tensors to be on the same device, but found at least two "
            f"devices, {', '.join(sorted(str(d) for d in devices))}")


_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}


class _GeneratorCheck(TorchFunctionMode):
    """Random draws: the generator must be on the device of the result (checked on the Python
    call, where the generator object is still the one created; aten sees a fresh wrapper)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        gens = [a for a in (*args, *kwargs.values()) if isinstance(a, torch._C.Generator)]
        if gens:
            if kwargs.get("device") is not None:
                target = torch.device(kwargs["device"])
            else:
                flat, _ = tree_flatten((args, kwargs))
                tens = [a for a in flat if isinstance(a, torch.Tensor)]
                target = _device_of(tens[0]) if tens else torch.device("cpu")
            for g in gens:
                gdev = g.device if isinstance(g, _Generator) else torch.device("cpu")
                if gdev.type != target.type:
                    raise DeviceMismatch(
                        f"{getattr(func, '__name__', func)}: expected a {target.type!r} device "
                        f"type for generator but found {gdev.type!r}")
        dev = kwargs.get("device")
        if func in _FROM_DATA and dev is not None and torch.device(dev).type == NAME:
            # tensors built from data skip the dispatch modes: build on the CPU, then move
            return func(*args, **{**kwargs, "device": "cpu"}).to(DEVICE)
        return func(*args, **kwargs)


#: operations that make the host wait for the device on CUDA: reading a value, copying to the
#: host, and operations whose output size depends on the data
_SYNC_OPS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.unique_dim,
             aten._unique2, aten.unique_consecutive, aten.repeat_interleave}

#: host synchronisations seen since the last reset, by operation name (see :func:`host_syncs`)
SYNCS: dict[str, int] = {}


def _count_sync(func: Any, args: tuple, kwargs: dict, on_fake: bool) -> None:
    packet = func.overloadpacket
    sync = on_fake and packet in _SYNC_OPS
    if packet in (aten._to_copy, aten.copy_) and args:
        src = args[1] if packet is aten.copy_ else args[0]
        dst_cpu = (torch.device(kwargs["device"]).type == "cpu" if kwargs.get("device")
                   is not None else packet is aten.copy_ and not isinstance(args[0],
                                                                         FakeGPUTensor))
        sync = isinstance(src, FakeGPUTensor) and dst_cpu
    if packet is aten.index and on_fake:
        sync = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                   for i in (args[1] if len(args) > 1 else ()) or ())
    if sync:
        SYNCS[str(packet)] = SYNCS.get(str(packet), 0) + 1


def host_syncs() -> int:
    """Host synchronisations counted since the last :func:`reset_syncs`."""
    return sum(SYNCS.values())


def reset_syncs() -> None:
    SYNCS.clear()


class _FakeGPUMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = dict(kwargs or {})
        flat, _ = tree_flatten((args, kwargs))
        on_fake = any(isinstance(a, FakeGPUTensor) for a in flat)
        _count_sync(func, args, kwargs, on_fake)
        dev = kwargs.get("device")
        if dev is not None:
            target = torch.device(dev)
        else:
            target = DEVICE if on_fake else torch.device("cpu")
        _check(func, args, kwargs, target)
        a2, k2 = tree_map(lambda a: a.elem if isinstance(a, FakeGPUTensor) else a,
                          (args, kwargs))
        if target.type == NAME and "device" in k2:
            k2["device"] = torch.device("cpu")
        out = func(*a2, **k2)
        schema = func._schema
        # in-place and out= operations return the tensor they wrote to: the original object
        if schema.returns and all(r.alias_info is not None and r.alias_info.is_write
                                  for r in schema.returns):
            if "out" in kwargs:
                return kwargs["out"]
            if args and isinstance(args[0], torch.Tensor):
                return args[0] if len(schema.returns) == 1 else tuple(args[:len(schema.returns)])
        if target.type == NAME:
            return tree_map(lambda o: FakeGPUTensor(o) if isinstance(o, torch.Tensor)
                            and not isinstance(o, FakeGPUTensor) else o, out)
        return out


@contextlib.contextmanager
def fake_gpu() -> Iterator[torch.device]:
    """Within the context, ``device="fakegpu"`` is a device with CUDA's mixing rules."""
    real = torch.Generator
    torch.Generator = _Generator  # type: ignore[misc]
    try:
        with _FakeGPUMode(), _GeneratorCheck():
            yield DEVICE
    finally:
        torch.Generator = real  # type: ignore[misc]
