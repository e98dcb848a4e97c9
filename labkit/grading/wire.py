"""What crosses between a student's kernel and the grader: plain data, and nothing else.

The grader never unpickles anything a kernel sends (unpickling runs code), and
never receives an object whose methods could lie about its value. A message is
UTF-8 JSON made of None, booleans, numbers, strings, lists, dicts with string
keys, and tensors written out as bytes:

    {"tensor": {"dtype": "float32", "shape": [2, 3], "data": "<base64 of the 24 bytes>",
                "requires_grad": false}}

`encode` turns Python values into such a message (in the kernel: a value that
is not plain data raises NotPlainData, naming its type); `decode` turns a
message back into values (in the grader: anything of another shape raises
NotPlainData). `decode` builds every tensor from its bytes itself, so a tensor
in the grader is an ordinary torch.Tensor whatever the kernel meant to send.

Two more kinds travel one way only, from the grader to the kernel, so that a
check can hand the student's code a network:

    {"built": {"expression": "nn.Linear(3, 4)", "seed": 0}}   a network `build` made: the kernel builds it again
    {"object": 2}                                             a network the kernel already holds (a stand-in's)

The kernel's `decode(message, local)` turns them into networks; the grader's
`decode(message)` refuses them like any other unexpected value.

This module imports only the standard library and torch: the kernel imports it
inside the sandbox, where labkit itself is not available.
"""

import base64
import json
import math
import select
import socket
import struct

import torch

MAX_MESSAGE = 64 * 2**20  # bytes: far above any exercise's tensors (a DCGAN at hidden 100 is 7 MB, 10 in base64)
MAX_DEPTH = 16
MAX_TENSORS = 1024  # per message: a DCGAN's state dict has 30; many tiny tensors cost the grader ~16x their bytes
MAX_VALUES = 100_000  # lists, dicts and items per message, outside tensors' bytes (each costs the grader ~100 bytes)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8,
          "uint8": torch.uint8, "bool": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


BUILT = "_labkit_built"  # the attribute `build` leaves on a network: how to build it again in the kernel
ENCODERS = {}  # exact type -> its description as plain data (labkit/grading/remote.py registers its networks)


class NotPlainData(TypeError):
    """A value that is not plain data (see the module docstring)."""


def build(expression, seed=0):
    """The network `expression` builds (Python over torch, nn and math), with torch's generator seeded by `seed`.

    For checks that hand the student's code a network: `count_parameters(build("nn.Linear(3, 4)"))`. In the
    instructor's notebook it is the network itself; while grading, the network goes to the kernel as its
    expression and seed, and the kernel builds it again, with the same weights (the same expression, the same
    seed, the same torch), in the box where the student's code runs. The global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = eval(expression, {"__builtins__": {}, "torch": torch, "nn": torch.nn, "math": math})
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"build({expression!r}) gave a {type(network).__name__}, not a network (an nn.Module)")
    network.__dict__[BUILT] = {"expression": expression, "seed": int(seed)}
    return network


def encode(value):
    """A message (bytes) holding `value`; NotPlainData if any part of it is not plain data."""
    return json.dumps(_to_plain(value, 0), allow_nan=True).encode()


def decode(message, local=None):
    """The values in a message; NotPlainData if it is not a well-formed message of plain data.

    `local` (the kernel's only) turns {"built": ...} and {"object": ...} into networks; without it they are refused.

    Decoding stays within a fixed budget: at most MAX_MESSAGE bytes, MAX_TENSORS tensors and MAX_VALUES other
    values, counted in the bytes before any is built (8 MB of nested lists would otherwise cost the grader
    about 90 times as much memory)."""
    if not isinstance(message, (bytes, bytearray)) or len(message) > MAX_MESSAGE:
        raise NotPlainData(f"a message of {len(message):,} bytes; at most {MAX_MESSAGE:,}")
    values = message.count(b"[") + message.count(b"{") + message.count(b",")  # an upper bound (base64 has none)
    if values > MAX_VALUES:
        raise NotPlainData(f"about {values:,} values in one message; at most {MAX_VALUES:,} (return a tensor)")
    try:
        plain = json.loads(message.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise NotPlainData(f"not a JSON message ({type(err).__name__})") from None
    tensors = message.count(b'"tensor"')  # an upper bound on the tensors in it (the key may also sit in a string)
    if tensors > MAX_TENSORS:
        raise NotPlainData(f"{tensors:,} tensors in one message; at most {MAX_TENSORS:,}")
    return _from_plain(plain, 0, local)


def _to_plain(value, depth):
    if depth > MAX_DEPTH:
        raise NotPlainData(f"values nested more than {MAX_DEPTH} deep")
    kind = type(value)  # exact types: a subclass may override what it says about itself
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}  # nan, inf, -inf
    if kind in (torch.Tensor, torch.nn.Parameter):
        return {"tensor": _tensor_to_plain(value)}
    if kind in ENCODERS:
        return ENCODERS[kind](value)
    if isinstance(value, torch.nn.Module) and BUILT in vars(value):
        return {"built": dict(vars(value)[BUILT])}
    if kind in (list, tuple):
        return [_to_plain(v, depth + 1) for v in value]
    if kind is dict and all(type(k) is str for k in value):
        return {"dict": {k: _to_plain(v, depth + 1) for k, v in value.items()}}
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "shape", None) == ():
        return _to_plain(value.item(), depth)  # a numpy scalar: its Python number
    raise NotPlainData(f"a {kind.__module__}.{kind.__qualname__} object, not a tensor, a number, a bool, "
                       f"a string, None, or a list of them")


def _tensor_to_plain(tensor):
    if tensor.dtype not in NAMES or tensor.layout != torch.strided or tensor.is_complex():
        raise NotPlainData(f"a tensor of dtype {tensor.dtype} / layout {tensor.layout}")
    data = torch.Tensor.contiguous(torch.Tensor.cpu(torch.Tensor.detach(tensor)))
    raw = data.view(torch.uint8) if data.dim() else data.reshape(1).view(torch.uint8)
    return {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape),
            "data": base64.b64encode(raw.numpy().tobytes()).decode("ascii"),
            "requires_grad": bool(tensor.requires_grad)}


def _from_plain(plain, depth, local=None):
    if depth > MAX_DEPTH:
        raise NotPlainData(f"values nested more than {MAX_DEPTH} deep")
    if plain is None or type(plain) in (bool, int, float, str):
        return plain
    if type(plain) is list:
        return [_from_plain(v, depth + 1, local) for v in plain]
    if type(plain) is dict and len(plain) == 1:
        (kind, body), = plain.items()
        if kind == "tensor":
            return _tensor_from_plain(body)
        if kind == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if kind == "dict" and type(body) is dict:
            return {str(k): _from_plain(v, depth + 1, local) for k, v in body.items()}
        if kind in ("built", "object") and local is not None:
            return local(kind, body)
    raise NotPlainData(f"an unexpected {type(plain).__name__} in a message")


def _tensor_from_plain(body):
    try:
        dtype = DTYPES[body["dtype"]]
        shape = [int(n) for n in body["shape"]]
        if any(type(n) is not int or n < 0 for n in body["shape"]) or len(shape) > 8:
            raise ValueError("bad shape")
        raw = base64.b64decode(body["data"], validate=True)
        count = math.prod(shape)
        if len(raw) != count * torch.tensor([], dtype=dtype).element_size():
            raise ValueError("the bytes do not fit the shape")
        tensor = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        del raw  # the tensor owns its own copy of the bytes (one copy, not two)
        tensor = tensor.reshape(shape)
        if body.get("requires_grad") is True and tensor.is_floating_point():
            tensor.requires_grad_(True)
        return tensor
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, MemoryError, base64.binascii.Error) as err:
        raise NotPlainData(f"a malformed tensor ({type(err).__name__}: {str(err)[:200]})") from None


class Channel:
    """Messages over a Unix socket between the grader and a kernel: each one a 8-byte length, then that many
    bytes. The grader's waits are given a `check`, called every CHECK_SECONDS while the other end is silent
    (or not reading): the kernel's time limit, which ends the wait by raising."""

    CHECK_SECONDS = 0.25

    def __init__(self, sock):
        self.sock = sock

    @classmethod
    def pair(cls):
        a, b = socket.socketpair()
        return cls(a), cls(b)

    def send(self, message, check=None):
        """Send one message (a kernel that stops reading cannot hold the grader past its `check`)."""
        data = memoryview(struct.pack("!Q", len(message)) + message)
        if check is None:
            return self.sock.sendall(data)
        while len(data):
            self._wait(check, write=True)
            try:
                data = data[self.sock.send(data[:2**20], socket.MSG_DONTWAIT):]
            except BlockingIOError:
                pass

    def receive(self, limit=MAX_MESSAGE, check=None):
        """The next message; EOFError if the other end is gone, ValueError if it announces more than `limit`
        bytes (refused before reading them)."""
        (length,) = struct.unpack("!Q", self._exactly(8, check))
        if length > limit:
            raise ValueError(f"a message of {length:,} bytes; at most {limit:,}")
        return self._exactly(length, check)

    def _exactly(self, count, check):
        data = bytearray(count)  # read in place: one copy of the message in memory
        view, done = memoryview(data), 0
        while done < count:
            if check is not None:
                self._wait(check)
            got = self.sock.recv_into(view[done:], min(count - done, 2**20))
            if not got:
                raise EOFError
            done += got
        return data

    def _wait(self, check, write=False):
        """Until the socket can be read (or written), calling `check` every CHECK_SECONDS on the way."""
        waits = ([], [self.sock]) if write else ([self.sock], [])
        while not any(select.select(*waits, [], self.CHECK_SECONDS)[:2]):
            check()

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()
