"""Devices: resolving ``device=`` arguments, seeded generators on a device, and the random state
a resumed run restores.

Every learner takes ``device=`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, or ``"auto"`` = CUDA when
available, else CPU). Nothing in taskgraph moves shared state in place: a fitted learner keeps
its model, layout and structure state on its device and returns predictions on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from taskgraph.exceptions import ValidationError

__all__ = ["resolve_device", "make_generator", "rng_state", "set_rng_state"]


def resolve_device(device: Any, name: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device`; ``"auto"`` is ``cuda`` when CUDA is available and
    ``cpu`` otherwise.

    Raises:
        ValidationError: naming ``name`` when ``device`` is not a torch device.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValidationError(
            f"{name}: expected 'auto' or a torch device such as 'cpu' or 'cuda:0', got "
            f"{device!r} ({str(exc).splitlines()[0][:120]})"
        ) from None


def make_generator(device: Any, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (random draws for tensors on a
    device must use a generator on that device)."""
    return torch.Generator(device=resolve_device(device)).manual_seed(int(seed))


def rng_state(device: Any) -> dict[str, Any]:
    """The global random state a resumed run needs: the CPU state, and the CUDA state of every
    device when training on CUDA (dropout and other global draws on the GPU use it)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if resolve_device(device).type == "cuda" and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Any) -> None:
    """Restore :func:`rng_state` (a bare CPU state tensor from older checkpoints is accepted).
    A CUDA state is restored only when the machine has as many CUDA devices."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and (
            len(cuda) == torch.cuda.device_count()):
        torch.cuda.set_rng_state_all(cuda)


def generator_state(gen: torch.Generator) -> dict[str, Any]:
    """A generator's state with the device type it belongs to."""
    return {"device": gen.device.type, "state": gen.get_state()}


def set_generator_state(gen: torch.Generator, state: Any) -> bool:
    """Restore :func:`generator_state` into ``gen``. States of another device type (a run
    resumed on another device) cannot be restored: returns ``False`` and leaves ``gen`` as
    seeded."""
    if isinstance(state, torch.Tensor):
        state = {"device": "cpu", "state": state}
    if state["device"] != gen.device.type:
        return False
    gen.set_state(state["state"])
    return True
