"""The learner contract and the learner registry.

Every learner follows scikit-learn's estimator contract: the constructor stores its arguments
and does nothing else; :meth:`BaseLearner.fit` builds and trains the model and returns ``self``;
learned state lives in trailing-underscore attributes (``model_``, ``task_graph_``,
``history_``, ``n_features_in_``). On top of that every learner has ``predict(x,
inference=None)``, ``predict_proba(x)``, ``evaluate(data)``, ``save(path)`` and
``load(path)``, and is registered by name::

    @register("my_learner")
    class MyLearner(BaseLearner): ...

    learner = create("my_learner", tasks, hidden=32)
    names = list()        # every registered name, sorted

One conformance test (``tests/test_learners.py``) runs every registered learner through the
whole contract.
"""

from __future__ import annotations

import builtins
import copy
import inspect
import math
import numbers
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from taskgraph._io import read_torch_file
from taskgraph.data import MultiTaskData, as_features
from taskgraph.devices import resolve_device
from taskgraph.exceptions import (
    CheckpointError,
    InactivePartWarning,
    NotFittedError,
    ValidationError,
)
from taskgraph.graph import TaskGraph
from taskgraph.nn.heads import OutputLayout
from taskgraph.registry import Registry
from taskgraph.tasks import Task, TaskSet

__all__ = ["BaseLearner", "register", "create", "list", "get", "load_learner", "graph_to_state",
           "graph_from_state", "encode_param", "decode_param"]

#: every registered learner class (the one :class:`~taskgraph.registry.Registry` type also
#: holds benchmarks and encoders)
LEARNERS: Registry[type[BaseLearner]] = Registry("learner")
_FORMAT = "taskgraph.learner"
_VERSION = 1


def register(name: str):
    """Class decorator registering a learner under ``name`` (lower-case, unique)."""

    def deco(cls: type[BaseLearner]) -> type[BaseLearner]:
        LEARNERS.register(name, cls)
        cls.name = name.lower()
        return cls

    return deco


def get(name: str) -> type[BaseLearner]:
    """The learner class registered as ``name``."""
    return LEARNERS.get(name)


def create(name: str, tasks: TaskSet | builtins.list[Task | str], **kwargs: Any) -> BaseLearner:
    """Build the learner registered as ``name`` over ``tasks`` with constructor ``kwargs``.

    Raises:
        ValidationError: for an unknown ``name`` or a keyword that is not a constructor
            argument of that learner (the message names it and lists the valid ones).
    """
    klass = get(name)
    valid = klass._param_names()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValidationError(
            f"{unknown[0]}: not a parameter of {klass.__name__} (learner {klass.name!r}); "
            f"valid: {sorted(p for p in valid if p != 'tasks')}"
        )
    return klass(tasks, **kwargs)


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public verb, as timm/torch.hub
    """Names of every registered learner, sorted."""
    return LEARNERS.list()


def _caller_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` that points at the first frame outside the
    taskgraph package (the user's ``fit`` call), counted from the caller of this function."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(root):
        frame, level = frame.f_back, level + 1
    return level


# ---------------------------------------------------------------------------- graph <-> state
def graph_to_state(g: TaskGraph) -> dict[str, Any]:
    """A TaskGraph as a dict of tensors and plain values (loadable with ``weights_only``)."""
    return {
        "names": builtins.list(g.names),
        "adjacency": torch.as_tensor(g.adjacency, dtype=torch.float64),
        "routing": None if g.routing is None else torch.as_tensor(g.routing, dtype=torch.float64),
        "modules": None if g.routing is None else builtins.list(g.modules),
        "candidates": None if g.candidates is None else torch.as_tensor(g.candidates),
        "raw": None if g.raw is None else torch.as_tensor(g.raw, dtype=torch.float64),
        "learned": bool(g.learned),
        "meta": dict(g.meta),
        "undirected": None if g.undirected is None else torch.as_tensor(g.undirected),
        "confidence": (None if g.confidence is None
                       else torch.as_tensor(g.confidence, dtype=torch.float64)),
    }


def graph_from_state(state: dict[str, Any]) -> TaskGraph:
    def arr(v):
        return None if v is None else v.numpy()

    return TaskGraph(
        arr(state["adjacency"]),
        state["names"],
        routing=arr(state["routing"]),
        modules=state["modules"],
        candidates=arr(state["candidates"]),
        raw=arr(state["raw"]),
        learned=state["learned"],
        meta=state["meta"],
        undirected=arr(state.get("undirected")),        # files before 2026-12-05 lack these
        confidence=arr(state.get("confidence")),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_frame(x: Any) -> bool:
    """Whether ``x`` is a pandas DataFrame (pandas is not imported for the check)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(x, pd.DataFrame)


def check_choices(owner: Any, choices: dict[str, tuple[Any, ...]]) -> None:
    """Each attribute named in ``choices`` holds one of its allowed values (the error names the
    argument and lists them)."""
    for name, allowed in choices.items():
        value = getattr(owner, name)
        if value not in allowed:
            raise ValidationError(f"{name}: expected one of {allowed}, got {value!r}")


def check_common_params(learner: BaseLearner) -> None:
    """Validate the constructor arguments every learner shares (called by ``fit``: the
    constructor only stores them, as in scikit-learn). Each error names the argument."""
    if not _is_int(learner.hidden) or learner.hidden < 1:
        raise ValidationError(f"hidden: expected a positive integer, got {learner.hidden!r}")
    if not _is_int(learner.batch_size) or learner.batch_size < 1:
        raise ValidationError(
            f"batch_size: expected a positive integer, got {learner.batch_size!r}")
    for name, lo in (("lr", None), ("weight_decay", 0.0)):
        v = getattr(learner, name)
        ok = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and (
            math.isfinite(float(v)))
        if not ok or (lo is None and float(v) <= 0) or (lo is not None and float(v) < lo):
            want = "a finite number > 0" if lo is None else "a finite number >= 0"
            raise ValidationError(f"{name}: expected {want}, got {v!r}")
    if learner.patience is not None and (not _is_int(learner.patience) or learner.patience < 1):
        raise ValidationError(
            f"patience: expected a positive integer or None, got {learner.patience!r}")
    if not _is_int(learner.seed):
        raise ValidationError(f"seed: expected an integer, got {learner.seed!r}")
    if learner.verbose is not None and not isinstance(learner.verbose, (bool, np.bool_)):
        raise ValidationError(f"verbose: expected True, False or None, got {learner.verbose!r}")
    frac = learner.validation_fraction
    if frac is not None and (isinstance(frac, (bool, np.bool_)) or not isinstance(
            frac, numbers.Real) or not 0.0 < float(frac) < 1.0):
        raise ValidationError(
            f"validation_fraction: expected a number in (0, 1) or None, got {frac!r}")
    resolve_device(learner.device)


class BaseLearner:
    """Base class of every multi-task learner.

    Args:
        tasks (TaskSet or list of Task/str): the tasks, in column order.
        encoder (nn.Module, optional): the feature encoder; it must expose ``out_dim``. When
            ``None`` an :class:`encoders.MLPBackbone` of width ``hidden`` is built in ``fit``
            from the training data's feature count. The module passed is copied, never
            trained in place.
        hidden (int): width of the default encoder and of task-side layers. (default: 64)
        epochs (int): training epochs (``fit(epochs=...)`` overrides). (default: 30)
        batch_size (int): mini-batch size. (default: 128)
        lr (float): Adam learning rate. (default: 1e-3)
        weight_decay (float): Adam weight decay. (default: 0.0)
        patience (int, optional): early-stopping patience in epochs on the validation loss.
        seed (int): seed of initialisation, shuffling and dropout. (default: 0)
        validation_fraction (float, optional): when ``fit`` gets no ``val``, hold out this
            share of ``train`` (seeded by ``seed``, stratified by environment) as validation
            data for model selection, early stopping and the learner's own choices, as
            scikit-learn's ``validation_fraction``; ``None`` trains on all of ``train`` and keeps
            the last epoch. (default: ``None``; the structure learners set their own)
        device (str): torch device, or ``"auto"`` (CUDA when available, else CPU). The model
            and its structure state live there; data may be given on the CPU or on that device,
            and predictions are returned on the CPU. (default: ``"cpu"``)
        verbose (bool, optional): progress bars; ``None`` shows them only on a terminal.

    Subclasses implement :meth:`_build` (return the ``nn.Module``) and may override
    :meth:`_forward` (head outputs ``[B, T, C_max]``), :meth:`_loss` (training objective),
    :meth:`_on_epoch_end`, :meth:`_learned_graph`, and the ``_train_state`` pair for state a
    resumed run needs.
    """

    name: ClassVar[str] = ""
    #: the training loop ``fit`` runs: a class built with the training settings (``epochs``,
    #: ``batch_size``, ``lr``, ``weight_decay``, ``patience``, ``seed``, ``verbose``,
    #: ``checkpoint``) whose ``fit(learner, train, val, resume=)`` returns a result with
    #: ``history`` and ``best_epoch``. The learners package binds :class:`taskgraph.Trainer`;
    #: the learner only calls its hooks' contract, it never imports the trainer.
    trainer_class: ClassVar[Any] = None

    def __init__(
        self,
        tasks: TaskSet | builtins.list[Task | str],
        *,
        encoder: nn.Module | None = None,
        hidden: int = 64,
        epochs: int = 30,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = None,
        seed: int = 0,
        validation_fraction: float | None = None,
        device: str = "cpu",
        verbose: bool | None = None,
    ) -> None:
        self.tasks = tasks
        self.encoder = encoder
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn params
    def _store_params(self, values: dict[str, Any]) -> None:
        """Keep a subclass's constructor arguments unchanged as attributes of the same names
        (scikit-learn's contract), from its ``locals()``."""
        for name, value in values.items():
            if name not in ("self", "tasks", "kwargs", "__class__"):
                setattr(self, name, value)

    @classmethod
    def _param_names(cls) -> builtins.list[str]:
        names: builtins.list[str] = []
        for klass in cls.__mro__:
            if klass is object or "__init__" not in vars(klass):
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    if p.name not in names:
                        names.append(p.name)
        return names

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """Constructor arguments, as scikit-learn's ``get_params``."""
        return {n: getattr(self, n) for n in self._param_names()}

    def set_params(self, **params: Any) -> BaseLearner:
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise ValidationError(f"{k}: not a parameter of {type(self).__name__}; "
                                      f"valid: {sorted(valid)}")
            setattr(self, k, v)
        return self

    def clone(self) -> BaseLearner:
        """An unfitted copy with the same parameters."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default
            for klass in type(self).__mro__ if "__init__" in vars(klass)
            for p in inspect.signature(klass.__init__).parameters.values()
        }
        shown = []
        for k, v in self.get_params().items():
            if k == "tasks":
                continue
            if k in defaults and defaults[k] is not inspect.Parameter.empty:
                try:
                    if v == defaults[k]:
                        continue
                except Exception:  # noqa: BLE001 - tensors etc. compare oddly
                    pass
            shown.append(f"{k}={type(v).__name__ if isinstance(v, nn.Module) else v!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------ building
    @property
    def tasks_(self) -> TaskSet:
        return TaskSet.coerce(self.tasks)

    @property
    def device_(self) -> torch.device:
        """The resolved training device (``device="auto"`` becomes ``cuda`` or ``cpu``)."""
        return resolve_device(self.device)

    def _cpu_layout(self) -> OutputLayout:
        """The output layout on the CPU, for predictions: a separate copy when the model lives
        elsewhere (``layout_`` is shared with model parts and is never moved in place)."""
        if self.layout_.is_binary.device.type == "cpu":
            return self.layout_
        cached = self.__dict__.get("_layout_cpu")
        if cached is None:
            cached = self._layout_cpu = copy.deepcopy(self.layout_).cpu()
        return cached

    def _make_encoder(self, feature_shape: tuple[int, ...]) -> nn.Module:
        from encoders import MLPBackbone

        if self.encoder is None:
            return MLPBackbone(int(np.prod(feature_shape)), hidden=self.hidden, n_layers=2)
        if not hasattr(self.encoder, "out_dim"):
            raise ValidationError("encoder: expected an nn.Module with an `out_dim` attribute")
        return copy.deepcopy(self.encoder)

    def _make_modular(self, feature_shape: tuple[int, ...], n_modules: int, mode: str,
                      module_dim: int | None = None) -> nn.Module:
        """The encoder as ``n_modules`` modules (:meth:`encoders.ModularEncoder.over` on the
        default or given backbone; a given ModularEncoder is used as it is)."""
        from encoders import ModularEncoder

        if isinstance(self.encoder, ModularEncoder):
            return self._make_encoder(feature_shape)
        return ModularEncoder.over(self._make_encoder(feature_shape), n_modules, mode,
                                   module_dim, int(self.hidden))

    def _build(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> nn.Module:
        raise NotImplementedError

    def _setup(self, feature_shape: tuple[int, ...], train: MultiTaskData | None) -> None:
        """Build ``model_`` and derived state. ``train`` is ``None`` when loading."""
        self.tasks_set_ = self.tasks_
        self.__dict__.pop("_layout_cpu", None)
        self.layout_ = OutputLayout(self.tasks_set_)
        self.feature_shape_ = tuple(int(s) for s in feature_shape)
        self.n_features_in_ = int(np.prod(self.feature_shape_))
        torch.manual_seed(self.seed)
        model = self._build(self.feature_shape_, train)
        self.model_ = model.to(self.device_)
        self.layout_ = self.layout_.to(self.device_)

    # ------------------------------------------------------------------ hooks
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Head outputs ``[B, T, C_max]``."""
        return self.model_(x)

    def _loss(self, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Training objective on one batch; returns the loss and values to log (numbers or
        scalar tensors: the Trainer reads tensors once per epoch, not per step)."""
        out = self._forward(batch.x)
        losses = self.layout_.task_losses(out, batch.y)
        loss = losses.sum()
        return loss, {"task_loss": loss.detach()}

    def _on_epoch_end(self, epoch: int, train: MultiTaskData,
                      optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """Called by the trainer after every epoch with the optimizer it steps (a learner may
        reset parts of its state, e.g. after pruning); returns values to log."""
        return {}

    @torch.no_grad()
    def _val_loss(self, val: MultiTaskData, batch_size: int = 4096,
                  sharded: bool = False) -> float:
        """Sum over tasks of the mean validation loss, in eval mode.

        With ``sharded=True`` (multi-process training) each process scores a contiguous share
        of ``val`` and the per-task sums and counts are all-reduced: every process gets the
        same value, and every process must call it."""
        from taskgraph import distributed as tgd

        self.model_.eval()
        device = self.device_
        per = torch.zeros(len(self.tasks_set_), device=device)
        count = torch.zeros_like(per)
        lo, hi = 0, len(val)
        if sharded:
            lo, hi = tgd.shard_bounds(len(val), tgd.world_size())[tgd.rank()]
        for i in range(lo, hi, batch_size):
            j = min(i + batch_size, hi)
            x = val.x[i:j].to(device)
            y = val.y[i:j].to(device)
            per += self.layout_.per_example_loss(self._forward(x), y).sum(dim=0)
            count += (~torch.isnan(y)).sum(dim=0)
        if sharded:
            both = tgd.all_reduce_sum(torch.cat([per, count.to(per.dtype)]))
            per, count = both[:len(per)], both[len(per):]
        return float((per / count.clamp_min(1)).sum())

    def _selection_loss(self, val: MultiTaskData, sharded: bool = False) -> float:
        """Validation criterion for model selection and early stopping (lower is better): the
        sum over tasks of the mean validation loss. ``inf`` marks an epoch as ineligible."""
        return self._val_loss(val, sharded=sharded)

    def _param_groups(self, lr: float) -> builtins.list[dict[str, Any]]:
        """Optimizer parameter groups (one group at ``lr`` by default)."""
        return [{"params": [p for p in self.model_.parameters() if p.requires_grad]}]

    def _train_state(self) -> dict[str, Any]:
        return {}

    def _load_train_state(self, state: dict[str, Any]) -> None:
        pass

    def _learned_graph(self) -> TaskGraph:
        """The learner's task graph; learners without structure return an empty, unlearned
        graph."""
        return TaskGraph.empty(self.tasks_set_.names, learned=False,
                               meta={"learner": self.name})

    # ------------------------------------------------------------------ contract
    def fit(
        self,
        train: MultiTaskData,
        val: MultiTaskData | None = None,
        epochs: int | None = None,
        *,
        checkpoint: str | Path | None = None,
        resume: bool | str | Path | None = None,
    ) -> BaseLearner:
        """Train on ``train`` (model selection and early stopping on ``val``); returns self.

        Args:
            train (MultiTaskData): training data over exactly this learner's tasks.
            val (MultiTaskData, optional): validation data; the epoch with the lowest
                validation loss is kept.
            epochs (int, optional): overrides the constructor's ``epochs``.
            checkpoint (path, optional): checkpoint file written atomically after every epoch.
            resume (bool or path, optional): continue from a checkpoint (``True`` = the
                ``checkpoint`` path); the result equals an uninterrupted run (same seed, CPU).
        """
        tasks = self.tasks_
        check_common_params(self)
        if not isinstance(train, MultiTaskData):
            raise ValidationError(f"train: expected MultiTaskData, got {type(train).__name__}")
        train.check_compatible(tasks, "train")
        train.check_trainable("train")
        if val is not None:
            if not isinstance(val, MultiTaskData):
                raise ValidationError(f"val: expected MultiTaskData, got {type(val).__name__}")
            val.check_compatible(tasks, "val")
            if tuple(val.feature_shape) != tuple(train.feature_shape):
                raise ValidationError(
                    f"val: feature shape {val.feature_shape} differs from train's "
                    f"{train.feature_shape}"
                )
        n_epochs = self.epochs if epochs is None else epochs
        if not isinstance(n_epochs, int) or n_epochs < 0:
            raise ValidationError(f"epochs: expected a non-negative integer, got {n_epochs!r}")
        if n_epochs > 0:    # with no epoch to select among, nothing is held out
            train, val = self._validation_split(train, val)
        self._skipped: dict[str, str] = {}
        self._setup(train.feature_shape, train)
        if self.trainer_class is None:
            raise RuntimeError("no trainer bound: import taskgraph.learners (it binds "
                               "taskgraph.Trainer to BaseLearner.trainer_class)")
        trainer = self.trainer_class(
            epochs=n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            patience=self.patience,
            seed=self.seed,
            verbose=self.verbose,
            checkpoint=checkpoint,
        )
        self.data_schema_ = getattr(train, "schema", None)
        result = trainer.fit(self, train, val, resume=resume)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self._after_fit(train, val)
        if self.history_:
            self.history_[-1].update({f"{part}_skipped": message
                                      for part, message in self._skipped.items()})
        return self

    def _part_inactive(self, part: str, message: str, warn: bool = True) -> None:
        """Record that the configured ``part`` cannot act on the data of this ``fit``.

        ``message`` names the cause found in the data and a remedy that fits it. It is warned
        once per fit as an :class:`~taskgraph.exceptions.InactivePartWarning` (``warn=False``
        for an automatic choice, such as ``structure_search="auto"`` skipping a search) and
        recorded at the end of ``fit`` as ``history_[-1]["<part>_skipped"]`` (no row, so no
        record, with ``epochs=0``). A part is recorded once per fit (the first message wins).
        """
        skipped = self.__dict__.setdefault("_skipped", {})
        if part in skipped:
            return
        skipped[part] = message
        if warn and message not in {m for p, m in skipped.items() if p != part}:
            warnings.warn(message, InactivePartWarning, stacklevel=_caller_stacklevel())

    def _validation_split(self, train: MultiTaskData, val: MultiTaskData | None
                          ) -> tuple[MultiTaskData, MultiTaskData | None]:
        """``(train, val)`` to train with: as given, or ``train`` split by
        ``validation_fraction`` when no ``val`` was given."""
        frac = self.validation_fraction
        if val is not None or frac is None:
            return train, val
        n_val = round(float(frac) * len(train))
        if n_val < 1 or n_val >= len(train):
            warnings.warn(f"validation_fraction: {frac:g} of {len(train)} training rows leaves "
                          f"no validation or no training rows; training on all rows without "
                          f"model selection", stacklevel=3)
            return train, None
        fractions = [1.0 - float(frac), float(frac)]
        try:        # keep every environment's mix in both parts when each is large enough
            return tuple(train.split(fractions, seed=int(self.seed),
                                     stratify_env=train.env is not None))
        except ValidationError:
            return tuple(train.split(fractions, seed=int(self.seed)))

    def _after_fit(self, train: MultiTaskData, val: MultiTaskData | None) -> None:
        """Called at the end of ``fit`` with the data it trained and selected on (``val`` is
        the internal split when ``validation_fraction`` made one): sets ``task_graph_``;
        learners add their post-training choices."""
        self.task_graph_ = self._learned_graph()

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")

    def _check_x(self, x: Any) -> torch.Tensor:
        if isinstance(x, MultiTaskData):
            x = x.x
        elif _is_frame(x):
            schema = getattr(self, "data_schema_", None)
            if schema is None:
                raise ValidationError("x: a DataFrame needs a learner fitted on "
                                      "MultiTaskData.from_frame (it keeps the encoding)")
            x = schema.transform(x, labels=False)["x"]
        xt = as_features(x, "x")
        if tuple(xt.shape[1:]) != self.feature_shape_:
            if xt[0].numel() != self.n_features_in_:
                raise ValidationError(
                    f"x: expected features of shape {self.feature_shape_} (as in training), "
                    f"got {tuple(xt.shape[1:])}"
                )
            xt = xt.reshape(xt.shape[0], *self.feature_shape_)
        return xt

    @torch.no_grad()
    def _outputs(self, x: Any, batch_size: int = 4096) -> torch.Tensor:
        """Head outputs for ``x`` in eval mode, in chunks. ``[N, T, C_max]``."""
        self._check_fitted()
        xt = self._check_x(x)
        self.model_.eval()
        device = self.device_
        outs = [self._forward(xt[i:i + batch_size].to(device)).float().cpu()
                for i in range(0, xt.shape[0], batch_size)]
        return torch.cat(outs)

    def predict_proba(self, x: Any) -> torch.Tensor:
        """Class probabilities ``[N, T, C]`` (``C = max_k n_classes_k``); zero in columns a task
        does not have and for regression tasks."""
        out = self._outputs(x)
        return self._cpu_layout().log_proba(out).exp()

    def predict_log_proba(self, x: Any) -> torch.Tensor:
        """Log class probabilities ``[N, T, C]`` (``-inf`` padding)."""
        return self._cpu_layout().log_proba(self._outputs(x))

    def predict(self, x: Any, inference: Any = None) -> torch.Tensor:
        """Labels ``[N, T]`` (float): per-task argmax, or a joint decode by ``inference``.

        Args:
            x: features ``[N, ...]`` (or a MultiTaskData).
            inference: ``None``/``"independent"`` for per-task argmax, or an object with
                ``decode(log_probs[N, T, C]) -> labels[N, T]`` such as
                :class:`taskgraph.inference.GMTL`.
        """
        out = self._outputs(x)
        layout = self._cpu_layout()
        if inference is None or inference == "independent":
            return layout.predict(out)
        if not hasattr(inference, "decode"):
            raise ValidationError(
                "inference: expected None, 'independent' or an object with a decode() method "
                f"(e.g. taskgraph.inference.GMTL), got {type(inference).__name__}"
            )
        check = getattr(inference, "check_tasks", None)
        if callable(check):
            check(self.tasks_set_)
        labels = inference.decode(layout.log_proba(out))
        labels = torch.as_tensor(labels, dtype=out.dtype)
        return torch.where(layout.is_reg, out[..., 0], labels)

    def evaluate(self, data: MultiTaskData, inference: Any = None) -> dict[str, float]:
        """Per-task metrics ``{"<task>/<metric>": value, ..., "mean": value}`` on ``data``."""
        from taskgraph.metrics import task_metrics

        self._check_fitted()
        if not isinstance(data, MultiTaskData):
            raise ValidationError(f"data: expected MultiTaskData, got {type(data).__name__}")
        data.check_compatible(self.tasks_set_, "data")
        out = self._outputs(data.x)
        layout = self._cpu_layout()
        proba = layout.log_proba(out).exp()
        pred = self.predict(data.x, inference=inference) if inference is not None else (
            layout.predict(out))
        return task_metrics(self.tasks_set_, data.y.cpu(), pred, proba[..., 1])

    # ------------------------------------------------------------------ persistence
    def _params_state(self) -> tuple[dict[str, Any], bool]:
        """Constructor arguments as values ``torch.load(weights_only=True)`` reads back (see
        :func:`encode_param`); ``custom`` is ``True`` when a module has no ``config()``."""
        params: dict[str, Any] = {}
        custom = False
        for k, v in self.get_params().items():
            if k == "tasks":
                continue
            params[k], unknown = encode_param(k, v)
            custom = custom or unknown
        return params, custom

    def _state(self) -> dict[str, Any]:
        params, custom = self._params_state()
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "learner": self.name,
            "tasks": self.tasks_set_.to_list(),
            "params": params,
            "custom_module": custom,
            "feature_shape": builtins.list(self.feature_shape_),
            "model": self.model_.state_dict(),
            "task_graph": graph_to_state(self.task_graph_),
            "history": self.history_,
            "extra": self._train_state(),
            "data_schema": (None if getattr(self, "data_schema_", None) is None
                            else self.data_schema_.to_dict()),
        }

    def save(self, path: str | Path, *, all_ranks: bool = False) -> Path:
        """Write the fitted learner to ``path`` atomically (a torch file with tensors and plain
        values only, loadable with ``weights_only=True``).

        Under ``torchrun`` only rank 0 writes (every rank holds the same weights); the other
        ranks return ``path`` without touching it (no barrier: a caller that reads the file on
        every rank synchronises itself). ``all_ranks=True`` writes on every rank (give each rank
        its own path)."""
        from taskgraph._io import atomic_write
        from taskgraph.distributed import is_main_process

        self._check_fitted()
        path = Path(path)
        if not (all_ranks or is_main_process()):
            return path
        with atomic_write(path, "wb") as fh:
            torch.save(self._state(), fh)
        return path

    @classmethod
    def load(cls, path: str | Path, *, tasks: TaskSet | None = None, **overrides: Any
             ) -> BaseLearner:
        """Load a learner saved by :meth:`save`.

        Args:
            path: the file.
            tasks (TaskSet, optional): refuse the file unless it was trained on these tasks.
            **overrides: constructor arguments to replace (e.g. ``encoder=`` for a custom
                module that has no ``config()``; ``device=``).
        """
        return load_learner(path, tasks=tasks, expected=cls if cls is not BaseLearner else None,
                            **overrides)


def _is_plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(v, (builtins.list, tuple)):
        return all(_is_plain(i) for i in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain(i) for k, i in v.items())
    return False


def read_state(path: str | Path, fmt: str = _FORMAT) -> dict[str, Any]:
    """A saved learner's contents (``torch.load(weights_only=True)``; errors become
    CheckpointError)."""
    return read_torch_file(path, fmt)


def encode_param(name: str, value: Any) -> tuple[Any, bool]:
    """One constructor argument as a value a ``weights_only`` load reads back: modules as their
    ``config()`` (``{"__encoder__": cfg}``), task graphs as ``{"__taskgraph__": state}``, numpy
    arrays as ``{"__ndarray__": tensor}``, tensors on the CPU, numpy scalars as Python ones.
    Returns ``(encoded, custom)``; ``custom`` marks a module without ``config()``.

    Raises:
        ValidationError: naming ``name`` for a value of any other kind (saving it would write a
            file that cannot be loaded).
    """
    from encoders import encoder_config

    if isinstance(value, nn.Module):
        cfg = encoder_config(value)
        return {"__encoder__": cfg}, cfg is None
    if isinstance(value, TaskGraph):
        return {"__taskgraph__": graph_to_state(value)}, False
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}, False
    if isinstance(value, torch.Tensor):
        return value.detach().cpu(), False
    if isinstance(value, np.generic):
        return value.item(), False
    if isinstance(value, torch.device):
        return str(value), False
    if not _is_plain(value):
        raise ValidationError(
            f"{name}: a {type(value).__name__} cannot be saved (saved learners hold tensors, "
            f"task graphs, modules with config() and plain values only)")
    return value, False


def decode_param(name: str, value: Any, overrides: dict[str, Any]) -> Any:
    """Inverse of :func:`encode_param`."""
    from encoders import build_encoder

    if not isinstance(value, dict) or len(value) != 1:
        return value
    if "__encoder__" in value:
        if value["__encoder__"] is None:
            raise CheckpointError(
                f"{name}: this file was saved with a custom module that has no config(); "
                f"pass {name}=<a module of the same architecture> to load()"
            )
        return build_encoder(value["__encoder__"])
    if "__taskgraph__" in value:
        g = value["__taskgraph__"]
        if isinstance(g.get("adjacency"), torch.Tensor):
            return graph_from_state(g)
        return TaskGraph.from_dict(g)     # the TaskGraph.to_dict form of older mtcrl files
    if "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    return value


def _restore_params(state: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    params = {k: v if k in overrides else decode_param(k, v, overrides)
              for k, v in state["params"].items()}
    params.update(overrides)
    return params


def _device_available(device: Any) -> bool:
    try:
        dev = resolve_device(device)
    except ValidationError:
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    return True


def load_learner(
    path: str | Path,
    *,
    tasks: TaskSet | None = None,
    expected: type[BaseLearner] | None = None,
    **overrides: Any,
) -> BaseLearner:
    """Load any saved learner (its class comes from the file's registry name)."""
    state = read_torch_file(path, _FORMAT)
    saved_tasks = TaskSet.from_list(state["tasks"])
    if tasks is not None and TaskSet.coerce(tasks) != saved_tasks:
        raise CheckpointError(
            f"tasks: the file was trained on {saved_tasks!r}, not on {TaskSet.coerce(tasks)!r}"
        )
    klass = get(state["learner"])
    if expected is not None and not issubclass(klass, expected):
        raise CheckpointError(
            f"path: the file holds a {klass.__name__!r} learner, not a {expected.__name__!r}"
        )
    params = _restore_params(state, overrides)
    for old, new in getattr(klass, "_param_aliases", {}).items():   # renamed arguments
        if old in params:
            value = params.pop(old)
            params.setdefault(new, value)
    if "device" not in overrides and not _device_available(params.get("device", "cpu")):
        warnings.warn(f"device: the file was saved from {params['device']!r}, which this "
                      f"machine does not have; loading on the CPU (pass device= to choose)",
                      stacklevel=2)
        params["device"] = "cpu"
    learner = klass(saved_tasks, **params)
    learner._setup(tuple(state["feature_shape"]), None)
    try:
        learner.model_.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"path: weights do not fit the model: {str(exc)[:300]}") from None
    learner._load_train_state(state.get("extra", {}))
    learner.history_ = state.get("history", [])
    learner.task_graph_ = graph_from_state(state["task_graph"])
    schema = state.get("data_schema")
    if schema is not None:
        from taskgraph.tables import TableSchema

        learner.data_schema_ = TableSchema.from_dict(schema)
    return learner
