"""Which output of a model is explained: ``output=`` (one definition for every method, check and callback).

A model may return a tensor, a tuple (``(logits, aux)``), a dict (``{"logits": ..., "loss": ...}``) or
an object with attributes (a Hugging Face ``ModelOutput``). ``output`` says which tensor is explained:

- ``None``: the model returns one tensor (anything else is an error naming ``output=``);
- an ``int``: that element of a tuple or list;
- a ``str``: that key of a mapping, or that attribute of an object;
- a callable ``fn(outputs) -> (N,) or (N, classes)``: any reduction, e.g. a segmentation model's mean
  logit over a region, ``lambda out: (out * region).mean((2, 3))``.

:class:`OutputSelected` wraps a model so that its forward returns the selected tensor: every method (and
Captum) works on the wrapper unchanged, and layer names are those of the wrapped model.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

from torch import Tensor, nn

__all__ = ["OutputSpec", "OutputSelected", "select_model_output", "describe_output", "check_output_spec", "output_key", "with_output"]

#: ``None``, a tuple index, a key or attribute name, or ``fn(outputs) -> Tensor``
OutputSpec = Union[None, int, str, Callable[[Any], Tensor]]


def describe_output(out: Any, depth: int = 0) -> str:
    """A short description of a model's output structure: ``tuple(Tensor(2, 10), dict(aux: Tensor(2,)))``.

    Example:
        >>> import torch
        >>> describe_output((torch.zeros(2, 3), {"aux": torch.zeros(2)}))
        'tuple(Tensor(2, 3), dict(aux: Tensor(2)))'
    """
    if isinstance(out, Tensor):
        return f"Tensor({', '.join(str(d) for d in out.shape)})"
    if depth >= 2:
        return type(out).__name__
    if isinstance(out, Mapping):
        items = ", ".join(f"{k}: {describe_output(v, depth + 1)}" for k, v in list(out.items())[:8])
        return f"{type(out).__name__}({items})"
    if isinstance(out, (tuple, list)):
        return f"{type(out).__name__}({', '.join(describe_output(v, depth + 1) for v in list(out)[:8])})"
    fields = {k: v for k, v in vars(out).items() if not k.startswith("_")} if hasattr(out, "__dict__") else {}
    if fields:
        items = ", ".join(f"{k}: {describe_output(v, depth + 1)}" for k, v in list(fields.items())[:8])
        return f"{type(out).__name__}({items})"
    return type(out).__name__


def _fix(out: Any) -> str:
    if isinstance(out, Mapping) or (hasattr(out, "__dict__") and not isinstance(out, (tuple, list))):
        keys = list(out.keys()) if isinstance(out, Mapping) else [k for k in vars(out) if not k.startswith("_")]
        example = repr(keys[0]) if keys else "'logits'"
        return f"pass output={example} (a key or attribute name) or output=fn(outputs) -> (N,) or (N, classes)"
    return "pass output=0 (the index of the explained tensor) or output=fn(outputs) -> (N,) or (N, classes)"


def check_output_spec(output: Any) -> None:
    """Raise a ``TypeError`` naming the accepted forms when ``output`` is not one of them."""
    if output is None or isinstance(output, str) or callable(output):
        return
    if isinstance(output, int) and not isinstance(output, bool):
        return
    raise TypeError(
        f"output must be None (the model returns one tensor), an int (tuple index), a str (key or attribute) "
        f"or a callable fn(outputs) -> Tensor; got {output!r}"
    )


def output_key(output: Any) -> Any:
    """A hashable, process-independent key for ``output`` (callables by qualified name)."""
    if output is None or isinstance(output, (int, str)):
        return output
    return ("callable", getattr(output, "__module__", ""), getattr(output, "__qualname__", type(output).__qualname__))


def select_model_output(out: Any, output: OutputSpec = None) -> Tensor:
    """The tensor that is explained, out of whatever the model returned.

    Example:
        >>> import torch
        >>> select_model_output({"logits": torch.ones(2, 3)}, "logits").shape
        torch.Size([2, 3])
        >>> select_model_output((torch.ones(2, 3), torch.zeros(2)), 1).shape
        torch.Size([2])
    """
    if output is None:
        if isinstance(out, Tensor):
            return out
        raise ValueError(
            f"the model returns {describe_output(out)}, not one tensor: say which output is explained: {_fix(out)}"
        )
    check_output_spec(output)
    if isinstance(output, str):
        if isinstance(out, Mapping):
            if output not in out:
                raise ValueError(f"output={output!r} is not a key of the model's output {describe_output(out)}")
            sel = out[output]
        elif hasattr(out, output) and not isinstance(out, Tensor):
            sel = getattr(out, output)
        else:
            raise ValueError(f"output={output!r}: the model's output {describe_output(out)} has no such key or attribute")
    elif isinstance(output, int):
        if not isinstance(out, (tuple, list)):
            raise ValueError(f"output={output!r} indexes a tuple, but the model returns {describe_output(out)}")
        if not -len(out) <= output < len(out):
            raise ValueError(f"output={output!r} is out of range: the model returns {describe_output(out)}")
        sel = out[output]
    else:
        sel = output(out)
    if not isinstance(sel, Tensor):
        raise ValueError(
            f"output={output!r} selects {describe_output(sel)} from the model's output {describe_output(out)}; "
            "it must select one tensor of shape (N,) or (N, classes)"
        )
    return sel


class OutputSelected(nn.Module):
    """``model`` whose forward returns ``select_model_output(model(...), output)``.

    The wrapped model is registered as ``_orig_mod``, the name :func:`~lightning_xai.functional.named_modules`
    leaves out (as for ``torch.compile``), so layer names (Grad-CAM's ``layer=``, the checks' layers) are
    the wrapped model's own.

    Example:
        >>> import torch
        >>> from lightning_xai import functional as F
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = torch.nn.Linear(3, 2)
        ...     def forward(self, x):
        ...         return {"logits": self.fc(x)}
        >>> wrapped = OutputSelected(Net(), "logits")
        >>> wrapped(torch.ones(4, 3)).shape, list(F.named_modules(wrapped))
        (torch.Size([4, 2]), ['', 'fc'])
    """

    def __init__(self, model: nn.Module, output: OutputSpec) -> None:
        super().__init__()
        check_output_spec(output)
        self._orig_mod = model
        self.output = output

    @property
    def module(self) -> nn.Module:
        return self._orig_mod

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return select_model_output(self._orig_mod(*args, **kwargs), self.output)


def with_output(model: nn.Module, output: OutputSpec) -> nn.Module:
    """``model`` itself when ``output`` is None, else :class:`OutputSelected` (never wrapped twice)."""
    if output is None:
        return model
    if isinstance(model, OutputSelected) and model.output is output:
        return model
    return OutputSelected(model, output)
