"""Stand-ins, in the grader, for what a student's kernel defined.

The instructor's check cells (`checks.dcgan_networks(Generator, Discriminator)`
and the hidden checks after it) run in the grader's own process with the
student's names bound to these stand-ins. A stand-in looks enough like the real
thing for the checks (a function you call, a class you instantiate, a network
you run, train or load weights into), but every call is a request to the
kernel (labkit/grading/kernel.py) and every answer is plain data rebuilt in the
grader: a tensor here is a tensor the grader made from bytes, compared with
labkit's reference by the grader's own, unpatched torch.

Gradients cross too: calling a function on a tensor that requires grad gives a
tensor whose backward asks the kernel for the vector-Jacobian product
(`torch.autograd.Function`), so `loss.backward(); x.grad` checks the
student's gradient.
"""

from collections import OrderedDict

import torch

from . import wire
from .kernel import Refused


def stand_in(kernel, name, kind):
    """The stand-in for the student's `name`, a "class" or a "function"."""
    return RemoteClass(kernel, name) if kind == "class" else RemoteFunction(kernel, name)


def _call(kernel, target, args, kwargs, what, method=None):
    """Call target(.method)(*args, **kwargs) in the kernel; (output, graph handle or None)."""
    reply = kernel.request("call", target=target, method=method, args=list(args), kwargs=dict(kwargs), what=what)
    return reply["output"], reply.get("graph")


class _Gradient(torch.autograd.Function):
    """An output computed in the kernel, whose backward the kernel computes too."""

    @staticmethod
    def forward(ctx, call, *tensors):
        output, graph = call()
        if type(output) is not torch.Tensor:
            raise Refused(f"{call.what} returned {type(output).__name__}, not a tensor")
        ctx.kernel, ctx.graph, ctx.count = call.kernel, graph, len(tensors)
        return output.detach()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.graph is None:  # the student's output does not depend on the inputs: no gradient
            return (None,) * (ctx.count + 1)
        grads = ctx.kernel.request("vjp", graph=ctx.graph, grad_output=grad_output)
        return (None, *grads)


class _PendingCall:
    def __init__(self, kernel, target, args, kwargs, what, method=None):
        self.kernel, self.target, self.args, self.kwargs, self.what, self.method = \
            kernel, target, args, kwargs, what, method

    def __call__(self):
        return _call(self.kernel, self.target, self.args, self.kwargs, self.what, self.method)


def _invoke(kernel, target, args, kwargs, what, method=None):
    tracked = [a for a in list(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    if tracked and torch.is_grad_enabled():
        return _Gradient.apply(_PendingCall(kernel, target, args, kwargs, what, method), *tracked)
    return _call(kernel, target, args, kwargs, what, method)[0]


class RemoteFunction:
    """The student's function `name`."""

    def __init__(self, kernel, name):
        self.kernel, self.__name__ = kernel, name

    def __call__(self, *args, **kwargs):
        return _invoke(self.kernel, self.__name__, args, kwargs, self.__name__)

    def __repr__(self):
        return f"<your function {self.__name__}>"


class RemoteClass:
    """The student's class `name`: calling it builds an instance in the kernel."""

    def __init__(self, kernel, name):
        self.kernel, self.__name__ = kernel, name

    def __call__(self, *args, **kwargs):
        what = f"{self.__name__}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
        handle = self.kernel.request("new", target=self.__name__, args=list(args), kwargs=dict(kwargs), what=what)
        return RemoteModule(self.kernel, handle, what)

    def __repr__(self):
        return f"<your class {self.__name__}>"


class RemoteModule:
    """An instance built in the kernel (a network): call it, train/eval it, read and load its weights."""

    def __init__(self, kernel, handle, what):
        self.kernel, self.handle, self.what = kernel, handle, what

    def __call__(self, *args, **kwargs):
        return _invoke(self.kernel, self.handle, args, kwargs, self.what, "__call__")

    def __getattr__(self, name):  # a method such as D.logits
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: _invoke(self.kernel, self.handle, args, kwargs, f"{self.what}.{name}", name)

    def train(self, mode=True):
        self.kernel.request("train", target=self.handle, mode=bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        pairs = self.kernel.request("state_dict", target=self.handle, what=f"{self.what}.state_dict()")
        return OrderedDict(_pairs(pairs, f"{self.what}.state_dict()"))

    def load_state_dict(self, state):
        self.kernel.request("load_state_dict", target=self.handle, state=[[k, v] for k, v in state.items()])

    def parameters(self):
        found = self.kernel.request("parameters", target=self.handle, what=f"{self.what}.parameters()")
        if type(found) is not list or not all(type(p) is torch.Tensor for p in found):
            raise Refused(f"{self.what}.parameters() did not give tensors")
        return iter(found)

    def module_types(self):
        """The class names of the network's modules, in the order of `modules()`."""
        found = self.kernel.request("module_types", target=self.handle)
        if type(found) is not list or not all(type(t) is str for t in found):
            raise Refused(f"{self.what}.modules() did not give modules")
        return found

    def __repr__(self):
        return f"<your {self.what}>"


wire.ENCODERS[RemoteModule] = lambda network: {"object": network.handle}  # passed back to the kernel that holds it


def _pairs(pairs, what):
    if type(pairs) is not list or not all(type(p) is list and len(p) == 2 and type(p[0]) is str
                                          and type(p[1]) is torch.Tensor for p in pairs):
        raise Refused(f"{what} did not give (name, tensor) pairs")
    return [(name, tensor) for name, tensor in pairs]
