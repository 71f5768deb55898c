"""Generator registry fed by the `liveavatar.generators` entry-point group."""
from __future__ import annotations

from importlib.metadata import entry_points

from liveavatar.errors import UserError
from liveavatar.generation.protocol import Generator

GROUP = "liveavatar.generators"
_BUILTIN = {
    # the default: routes each character to rig2d or mesh by its pack kind
    "auto": "liveavatar.generation.auto:AutoGenerator",
    "rig2d": "liveavatar.generation.rig2d:Rig2DGenerator",
    "mesh": "liveavatar.generation.mesh:MeshGenerator",
    "neural": "liveavatar.generation.neural:NeuralGenerator",
}


def available() -> dict[str, str]:
    """name -> 'module:attr' for every registered generator (entry points win over built-ins)."""
    found = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def create(name: str, device: str | None = None, size: int | None = None, load: bool = True) -> Generator:
    """Instantiate generator `name` on `device` (default: cuda when available, else cpu) at
    `size` (default: the generator's own), load it and warm it up."""
    gens = available()
    if name not in gens:
        raise UserError(f"unknown generator {name!r}; available: {', '.join(sorted(gens))}")
    if device not in (None, "cpu", "cuda"):
        raise UserError(f"unknown device {device!r}; use cpu or cuda")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA GPU")
    module_name, _, attr = gens[name].partition(":")
    import importlib
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"generator {name!r} could not be loaded from {gens[name]}: {e}") from e
    kwargs = {} if size is None else {"size": size}
    gen = factory(device=device or default_device(), **kwargs)
    if load:
        gen.load()
        gen.warmup()
    return gen
