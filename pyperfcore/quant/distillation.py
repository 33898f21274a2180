"""Knowledge distillation (torch): shrink a model by training a smaller student on a teacher's outputs,
before quantizing it.

- :func:`distillation_loss`: temperature-scaled KL divergence between teacher and student logits
  (Hinton et al., 2015), optionally mixed with cross-entropy on hard labels.
- :func:`embedding_distillation_loss`: ``1 - cosine`` or mean squared error between sentence
  embeddings.
- :func:`distill`: a small training loop; the teacher is never modified.
- :func:`agreement`: top-1 agreement and cosine between student and teacher outputs over some data,
  to see what distillation bought (the same metrics as :func:`pyperfcore.quant.report.compare`).

This module imports torch; ``import pyperfcore.quant`` does not import it.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from .report import Metrics

__all__ = ["distillation_loss", "embedding_distillation_loss", "distill", "DistillResult", "agreement"]

LOSSES = ("kl", "mse", "cosine")


# --------------------------------------------------------------------------------------------
# validation


def _check_pair(student: Any, teacher: Any, what: str) -> None:
    for name, x in (("student", student), ("teacher", teacher)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} {what} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} {what} must be a floating-point tensor, got {x.dtype}")
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher {what} differ in shape: "
                         f"{tuple(student.shape)} vs {tuple(teacher.shape)}")
    if student.ndim == 0:
        raise ValueError(f"{what} need a last (class or feature) dimension; got 0-d tensors")


def _check_finite(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    # One host synchronisation for both; the slow path below only runs to word the error.
    if bool((torch.isfinite(student).all() & torch.isfinite(teacher).all()).item()):
        return
    bad = [n for n, x in (("student", student), ("teacher", teacher)) if not bool(torch.isfinite(x).all())]
    raise ValueError(f"{' and '.join(bad)} {what} contain NaN or infinity; mask classes with a large "
                     "negative finite value (not -inf)")


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


def _check_alpha(alpha: Any, have_labels: bool) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number in [0, 1], got {type(alpha).__name__}")
    a = float(alpha)
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if a != 1.0 and not have_labels:
        raise ValueError(f"alpha={alpha!r} weights a cross-entropy term by 1 - alpha, which needs labels; "
                         "pass labels (distill: labels=True) or use alpha=1.0 for pure distillation")
    return a


def _check_labels(labels: Any, logits: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must be the logits shape without its class "
                         f"dimension, {tuple(logits.shape[:-1])}")
    if labels.numel():
        lo, hi = (int(v) for v in torch.aminmax(labels))
        n_classes = logits.shape[-1]
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"labels must be class indices in [0, {n_classes}), got values in [{lo}, {hi}]")


def _compute_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    # Half-precision softmax/log loses too much; do the loss math in at least float32.
    dt = torch.promote_types(a.dtype, b.dtype)
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


def _zero_loss(student: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A sum over the (empty) student keeps the graph: backward() works and gives zero gradients.
    return student.to(dtype).sum() * 0.0


# --------------------------------------------------------------------------------------------
# losses


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, alpha: float,
        labels: torch.Tensor | None) -> torch.Tensor:
    dt = _compute_dtype(student, teacher)
    n_classes = student.shape[-1]
    s = student.to(dt).reshape(-1, n_classes)
    if s.numel() == 0:
        return _zero_loss(student, dt)
    t = teacher.detach().to(dt).reshape(-1, n_classes)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    # KL(p || q) summed over classes, averaged over rows ("batchmean"); the T^2 factor makes the
    # gradient w.r.t. the logits T * (q - p) / rows, so its size barely moves with T.
    loss = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (temperature * temperature)
    if alpha == 1.0:
        return loss
    ce = F.cross_entropy(s, labels.reshape(-1).long())  # type: ignore[union-attr]
    return alpha * loss + (1.0 - alpha) * ce


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 2.0,
                      alpha: float = 1.0, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Temperature-scaled knowledge-distillation loss between logits.

    .. math::

        \\alpha\\,T^2\\,\\mathrm{KL}\\big(\\mathrm{softmax}(t/T)\\,\\|\\,\\mathrm{softmax}(s/T)\\big)
        + (1-\\alpha)\\,\\mathrm{CE}(s, \\mathrm{labels})

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor
        Floating-point logits of the same shape ``[..., C]``; all leading dimensions are rows
        (``[batch, C]`` or ``[batch, seq, C]``). The teacher is detached (no gradient flows into it).
    temperature : float
        Softening temperature ``T > 0``. The ``T**2`` factor keeps the gradient scale roughly
        independent of ``T``: the gradient w.r.t. the student logits is exactly
        ``alpha * T * (softmax(s/T) - softmax(t/T)) / rows``.
    alpha : float
        Weight in ``[0, 1]`` of the distillation term; ``1 - alpha`` weights the cross-entropy on
        ``labels``. Anything but 1 needs ``labels``.
    labels : torch.Tensor, optional
        Integer class indices in ``[0, C)`` of shape ``logits.shape[:-1]``.

    Returns
    -------
    torch.Tensor
        A scalar: the KL divergence summed over classes and averaged over rows ("batchmean"),
        computed with ``log_softmax`` (stable for large logits), in the promoted dtype of the
        inputs, and in float32 for float16/bfloat16 inputs. With zero rows the loss is ``0``,
        still attached to the student's graph (``backward()`` works, gradients are zero). When
        the two nearly agree on nearly one-hot rows, rounding can leave the KL term a hair below
        0 (about 1e-9 in float32); it is not clamped, which would zero the gradient.

    Raises
    ------
    TypeError
        Inputs that are not floating-point tensors; labels that are not integers.
    ValueError
        Shapes that differ; ``temperature`` not finite or ``<= 0``; ``alpha`` outside ``[0, 1]``
        or ``alpha != 1`` without labels; labels of the wrong shape or out of range; NaN or
        infinity in either logits (mask classes with a large negative finite value, not ``-inf``).
    """
    _check_pair(student_logits, teacher_logits, "logits")
    temperature = _check_temperature(temperature)
    alpha = _check_alpha(alpha, labels is not None)
    if labels is not None:
        _check_labels(labels, student_logits)
    _check_finite(student_logits, teacher_logits, "logits")
    return _kl(student_logits, teacher_logits, temperature, alpha, labels)


def _embedding(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    dt = _compute_dtype(student, teacher)
    dim = student.shape[-1]
    s = student.to(dt).reshape(-1, dim)
    if s.numel() == 0:
        return _zero_loss(student, dt)
    t = teacher.detach().to(dt).reshape(-1, dim)
    if kind == "mse":
        return F.mse_loss(s, t)
    # Each row divided by max(norm, 1e-12): an all-zero row has cosine 0 with anything.
    cos = (F.normalize(s, dim=-1, eps=1e-12) * F.normalize(t, dim=-1, eps=1e-12)).sum(-1)
    return (1.0 - cos).mean()


def _check_kind(kind: Any) -> str:
    if kind not in ("cosine", "mse"):
        raise ValueError(f"kind must be 'cosine' or 'mse', got {kind!r}")
    return kind


def embedding_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, *, kind: str = "cosine") -> torch.Tensor:
    """Distillation loss between embeddings ``[..., D]`` (e.g. sentence embeddings).

    Parameters
    ----------
    student, teacher : torch.Tensor
        Floating-point embeddings of the same shape; all leading dimensions are rows. The teacher
        is detached.
    kind : {"cosine", "mse"}
        ``"cosine"``: ``1 - cosine similarity`` per row, averaged over rows (in ``[0, 2]``; ignores
        the embeddings' norms, which suits models whose embeddings are normalized before use).
        ``"mse"``: mean squared error over all elements (matches norms too).

    Returns
    -------
    torch.Tensor
        A scalar, in the promoted dtype (float32 for half-precision inputs). With zero rows it is
        ``0``, still attached to the student's graph.

    Raises
    ------
    TypeError
        Inputs that are not floating-point tensors.
    ValueError
        Shapes that differ, an unknown ``kind``, NaN or infinity in either input.
    """
    _check_pair(student, teacher, "embeddings")
    kind = _check_kind(kind)
    _check_finite(student, teacher, "embeddings")
    return _embedding(student, teacher, kind)


# --------------------------------------------------------------------------------------------
# training loop


@dataclass
class DistillResult:
    """What :func:`distill` did.

    Attributes
    ----------
    steps : int
        Optimizer steps taken.
    history : list of float
        Mean loss per epoch (an epoch cut short by ``max_steps`` or the callback counts the steps
        it ran; epochs with no steps are left out).
    losses : list of float
        Loss of every step, before that step's update.
    stopped_early : bool
        True when ``max_steps`` or the callback ended training before the data ran out.
    """

    steps: int = 0
    history: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def initial_loss(self) -> float | None:
        """Loss of the first step (the untrained student on the first batch); None without steps."""
        return self.losses[0] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        """Loss of the last step (one batch, so noisy: see ``history`` for epoch means); None without steps."""
        return self.losses[-1] if self.losses else None


def _modes(model: Any) -> list[tuple[Any, bool]]:
    # Every submodule's flag, not only the top one: model.train(flag) would overwrite a user's
    # deliberate mix (e.g. a frozen BatchNorm kept in eval inside a training model).
    return [(m, m.training) for m in model.modules()]


def _restore(modes: list[tuple[Any, bool]]) -> None:
    for m, flag in modes:
        m.training = flag


def _split(batch: Any, labels: bool, where: str) -> tuple[Any, Any]:
    if not labels:
        return batch, None
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
        raise ValueError(f"with labels=True each batch must be a pair (inputs, labels); the batch {where} "
                         f"is a {type(batch).__name__}{size}")
    return batch[0], batch[1]


def _call(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _forward(model: Any, inputs: Any, output: Callable[[Any], Any] | None, who: str, step: int) -> torch.Tensor:
    try:
        out = _call(model, inputs)
        if output is not None:
            out = output(out)
    except Exception as exc:
        raise RuntimeError(f"the {who} model failed at step {step}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor):
        hint = "" if output is not None else "; pass output= to pick it (e.g. output=lambda o: o.logits)"
        raise TypeError(f"the {who} output to compare must be a torch.Tensor, got {type(out).__name__} "
                        f"at step {step}{hint}")
    return out


def _check_options(epochs: Any, lr: Any, optimizer: Any, max_steps: Any, grad_clip: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral)
                                  or max_steps < 0):
        raise ValueError(f"max_steps must be None or an integer >= 0, got {max_steps!r}")
    if optimizer is None and not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0, got {lr!r}")
    if grad_clip is not None and not (isinstance(grad_clip, numbers.Real) and math.isfinite(grad_clip) and grad_clip > 0):
        raise ValueError(f"grad_clip must be None or finite and > 0, got {grad_clip!r}")


def _nonfinite(step: int, epoch: int, s: torch.Tensor, t: torch.Tensor, what: str) -> FloatingPointError:
    where = [n for n, x in (("student", s), ("teacher", t)) if not bool(torch.isfinite(x.detach()).all())]
    cause = f"the {' and '.join(where)} output contains NaN or infinity" if where else "both outputs are finite"
    return FloatingPointError(f"non-finite {what} at step {step} (epoch {epoch}): {cause}; no update was made, "
                              f"the student keeps the weights it had before step {step}")


def distill(student: Any, teacher: Any, data: Iterable[Any], *, epochs: int = 1, lr: float = 1e-3,
            optimizer: Any = None, loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "kl",
            temperature: float = 2.0, alpha: float = 1.0, labels: bool = False,
            output: Callable[[Any], Any] | None = None, max_steps: int | None = None,
            grad_clip: float | None = None, callback: Callable[[int, float], Any] | None = None,
            keep_sparsity: bool = False) -> DistillResult:
    """Train ``student`` in place to reproduce ``teacher``'s outputs on ``data``.

    Parameters
    ----------
    student, teacher : torch.nn.Module
        Two different modules sharing no parameters. The teacher runs in eval mode under
        ``torch.no_grad()`` and is never modified; the student runs in train mode. Both get every
        submodule's training flag back afterwards, also when an exception escapes.
    data : iterable
        Re-iterable batches (a list, a ``DataLoader``), read once per epoch. A batch is the model
        input: a tensor (``model(x)``), a tuple or list (``model(*batch)``) or a dict
        (``model(**batch)``). With ``labels=True`` each batch is a pair ``(inputs, labels)``
        instead, ``inputs`` following the same rules. Tensors are not moved between devices.
    epochs : int
        Passes over ``data``.
    lr : float
        Learning rate of the default optimizer, ``torch.optim.AdamW`` over the student's trainable
        parameters with torch's other defaults (``weight_decay=0.01``).
    optimizer : torch.optim.Optimizer, optional
        Used instead of the default (``lr`` is then ignored).
    loss : {"kl", "mse", "cosine"} or callable
        ``"kl"``: :func:`distillation_loss` on logits; ``"mse"``/``"cosine"``:
        :func:`embedding_distillation_loss`; a callable ``(student_out, teacher_out) -> scalar``.
    temperature, alpha : float
        Passed to :func:`distillation_loss` (``loss="kl"`` only). ``alpha < 1`` needs ``labels=True``.
    labels : bool
        Each batch is ``(inputs, labels)``; the labels feed the cross-entropy term (``loss="kl"``).
    output : callable, optional
        Maps a model's raw output to the tensor compared, e.g. ``lambda o: o.logits`` or
        ``lambda o: o.last_hidden_state[:, 0]``; applied to both models.
    max_steps : int, optional
        Stop after this many optimizer steps in all.
    grad_clip : float, optional
        Clip the student's gradient norm to this value; a non-finite gradient norm then raises
        ``FloatingPointError`` before the update.
    callback : callable, optional
        ``callback(step, loss)`` after each step (``step`` counts from 1); returning ``False``
        stops training.
    keep_sparsity : bool
        For a pruned student (:func:`pyperfcore.quant.prune`): the weights of its ``nn.Linear``
        layers that are exactly zero when training starts stay zero (their entries are zeroed
        again after every optimizer step, which optimizers with momentum or weight decay would
        otherwise move), so a 2:4 or magnitude pattern survives distillation.

    Returns
    -------
    DistillResult
        Steps taken and the losses. Empty ``data`` (or ``epochs=0``) is valid: no steps, the
        student unchanged. A batch whose compared outputs have no elements is skipped (not a step).

    Raises
    ------
    FloatingPointError
        A non-finite loss (e.g. NaN from the teacher), naming the step. It is raised before that
        step's update, so the student keeps the weights of the step before.
    RuntimeError
        A model or the loss raised; the message names the step, the original is chained.
    TypeError, ValueError
        Bad arguments, detected before any training (models that are the same or share
        parameters, ``alpha < 1`` without labels, a one-shot iterator with ``epochs > 1``, ...).
    """
    from torch import nn

    for name, m in (("student", student), ("teacher", teacher)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    if student is teacher:
        raise ValueError("student and teacher are the same module; distill into a separate (smaller) copy")
    # Buffers too: a BatchNorm in train mode updates its running statistics in place.
    teacher_state = {id(p) for p in teacher.parameters()} | {id(b) for b in teacher.buffers()}
    shared = [n for n, p in [*student.named_parameters(), *student.named_buffers()] if id(p) in teacher_state]
    if shared:
        raise ValueError(f"student and teacher share parameters or buffers ({', '.join(shared[:3])}"
                         f"{', ...' if len(shared) > 3 else ''}); training would modify the teacher")
    _check_options(epochs, lr, optimizer, max_steps, grad_clip)
    if callable(loss):
        if labels or alpha != 1.0:
            raise ValueError("labels and alpha apply to loss='kl' only; a callable loss gets (student_out, teacher_out)")

        def compute(s: torch.Tensor, t: torch.Tensor, y: Any) -> Any:
            return loss(s, t)
    elif loss == "kl":
        temperature = _check_temperature(temperature)
        alpha = _check_alpha(alpha, bool(labels))

        def compute(s: torch.Tensor, t: torch.Tensor, y: Any) -> Any:
            _check_pair(s, t, "logits")
            if y is not None:
                _check_labels(y, s)  # out-of-range labels would be a device assert on CUDA
            return _kl(s, t, temperature, alpha, y)
    elif loss in ("mse", "cosine"):
        if labels or alpha != 1.0:
            raise ValueError(f"labels and alpha apply to loss='kl' only, not loss={loss!r}")

        def compute(s: torch.Tensor, t: torch.Tensor, y: Any) -> Any:
            _check_pair(s, t, "embeddings")
            return _embedding(s, t, loss)
    else:
        raise ValueError(f"loss must be one of {LOSSES} or a callable (student_out, teacher_out) -> scalar, got {loss!r}")
    if epochs > 1 and iter(data) is data:
        raise ValueError("data is a one-shot iterator, which would be empty after the first epoch; "
                         "pass a list or a DataLoader for epochs > 1")

    result = DistillResult()
    if epochs == 0 or max_steps == 0:
        return result
    params = [p for p in student.parameters() if p.requires_grad]
    if optimizer is None:
        if not params:
            raise ValueError("the student has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=lr)

    # keep-masks of the pruned weights, taken before the first step
    masks = [(m.weight, m.weight.detach() != 0) for m in student.modules()
             if isinstance(m, nn.Linear) and m.weight.requires_grad] if keep_sparsity else []
    masks = [(w, k) for w, k in masks if not bool(k.all())]
    student_modes, teacher_modes = _modes(student), _modes(teacher)
    try:
        student.train()
        teacher.eval()
        for epoch in range(1, epochs + 1):
            epoch_losses: list[float] = []
            for batch in data:
                step = result.steps + 1
                inputs, y = _split(batch, labels, f"at step {step}")
                with torch.no_grad():
                    t_out = _forward(teacher, inputs, output, "teacher", step)
                s_out = _forward(student, inputs, output, "student", step)
                if s_out.numel() == 0 and t_out.numel() == 0:
                    continue
                try:
                    value = compute(s_out, t_out, y)
                except Exception as exc:
                    raise RuntimeError(f"the loss failed at step {step}: {type(exc).__name__}: {exc}") from exc
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    got = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                    raise TypeError(f"the loss must return a scalar tensor; at step {step} it returned {got}")
                v = float(value.detach())  # the one host sync per step; also the value we record
                if not math.isfinite(v):
                    raise _nonfinite(step, epoch, s_out, t_out, "loss")
                optimizer.zero_grad(set_to_none=True)
                student.zero_grad(set_to_none=True)  # parameters the user's optimizer does not hold
                value.reshape(()).backward()
                if grad_clip is not None:
                    norm = nn.utils.clip_grad_norm_(params, grad_clip)
                    if not math.isfinite(float(norm)):
                        raise _nonfinite(step, epoch, s_out, t_out, "gradient norm")
                optimizer.step()
                if masks:
                    with torch.no_grad():
                        for w, keep in masks:
                            w.mul_(keep)
                result.steps = step
                result.losses.append(v)
                epoch_losses.append(v)
                stop = callback is not None and callback(step, v) is False
                if stop or (max_steps is not None and step >= max_steps):
                    result.stopped_early = True
                    break
            if epoch_losses:
                result.history.append(sum(epoch_losses) / len(epoch_losses))
            if result.stopped_early:
                break
    finally:
        _restore(student_modes)
        _restore(teacher_modes)
    return result


# --------------------------------------------------------------------------------------------
# evaluation


def agreement(student: Any, teacher: Any, data: Iterable[Any], *, output: Callable[[Any], Any] | None = None,
              labels: bool = False) -> dict[str, float]:
    """How closely the student's outputs match the teacher's over ``data``.

    Both models run in eval mode under ``torch.no_grad()``; their training flags are restored.
    Metrics are those of :func:`pyperfcore.quant.report.compare` with the teacher as reference,
    accumulated batch by batch (no outputs are kept), rows being all but the last dimension.

    Parameters
    ----------
    student, teacher : torch.nn.Module
        The models (may be the same module, e.g. to check the metrics).
    data : iterable
        Batches as in :func:`distill`.
    output : callable, optional
        Maps a model's raw output to the tensor compared.
    labels : bool
        Each batch is ``(inputs, labels)``; adds ``student_accuracy`` and ``teacher_accuracy``
        (top-1 against the labels).

    Returns
    -------
    dict
        ``rows``, ``top1_agreement``, ``cosine_mean``, ``cosine_min``, ``max_abs_err``,
        ``mean_abs_err`` (and the accuracies with ``labels=True``).

    Raises
    ------
    ValueError
        No outputs to compare (empty data), shapes that differ, NaN or infinity in an output.
    """
    modes = _modes(student) + _modes(teacher)
    metrics = Metrics()
    correct = {"student": 0, "teacher": 0}
    try:
        student.eval()
        teacher.eval()
        with torch.no_grad():
            for k, batch in enumerate(data, start=1):
                inputs, y = _split(batch, labels, f"number {k}")
                t = _forward(teacher, inputs, output, "teacher", k)
                s = _forward(student, inputs, output, "student", k)
                if t.shape != s.shape:
                    raise ValueError(f"student and teacher outputs differ in shape at batch {k}: "
                                     f"{tuple(s.shape)} vs {tuple(t.shape)}")
                if t.numel() == 0:
                    continue
                if not bool(torch.isfinite(s).all()):
                    raise ValueError(f"the student output at batch {k} contains NaN or infinity")
                metrics.update(t, s)
                if y is not None:
                    n = t.numel() // t.shape[-1] if t.ndim else 1
                    y = torch.as_tensor(y).reshape(-1).to(s.device)
                    if y.numel() != n:
                        raise ValueError(f"batch {k} has {y.numel()} labels for {n} output rows")
                    for who, out in (("student", s), ("teacher", t)):
                        correct[who] += int((out.reshape(n, -1).argmax(-1) == y).sum())
    finally:
        _restore(modes)
    if metrics.rows == 0:
        raise ValueError("no outputs to compare: data is empty (or every batch has no rows)")
    res: dict[str, float] = {"rows": metrics.rows, **metrics.result()}
    if labels:
        res["student_accuracy"] = correct["student"] / metrics.rows
        res["teacher_accuracy"] = correct["teacher"] / metrics.rows
    return res
