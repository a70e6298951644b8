"""Combined methods, `--method a+b`: each part is built as usual and owns the hooks it overrides.

Rules (simple on purpose):
- `beta`, `posterior`, `decoder_inputs`, `kl_term`, `extra_loss`, `loss`, `train_step` and `selection_loss` have
  at most one owner, the one part whose class overrides it; two parts overriding the same one is an error
  (`anneal+cyclical` both set beta). Every part, and the composite, calls the owner's version,
  so e.g. aggressive's `train_step` calls a `loss` that uses word dropout's `decoder_inputs`.
- `setup` and `end_epoch` run for every part, in the order written.
- Parameters are `-p part.key=value`, or `-p key=value` when only one part has `key`; the run's
  config.json stores them prefixed. Method state is checkpointed per part.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Method, MethodError, NoParams

if TYPE_CHECKING:
    from .context import SetupContext, TrainingContext

SEPARATOR = "+"
SINGLE_OWNER_HOOKS = ("beta", "posterior", "decoder_inputs", "kl_term", "extra_loss", "loss", "train_step",
                      "selection_loss")


def overridden(part: Method, hook: str) -> bool:
    """True when the part's class defines its own `hook` (not Method's default)."""
    return getattr(type(part), hook) is not getattr(Method, hook)


class Composite(Method):
    """Several registered methods acting together; each hook is delegated to the part that overrides it."""

    Params = NoParams

    def __init__(self, parts: list[Method]):
        super().__init__(NoParams())
        self.parts = parts
        self.name = SEPARATOR.join(p.name for p in parts)
        self.needs_latent = any(p.needs_latent for p in parts)
        self.owners: dict[str, str] = {}
        for hook in SINGLE_OWNER_HOOKS:
            owners = [p for p in parts if overridden(p, hook)]
            if len(owners) > 1:
                raise MethodError(f"methods {' and '.join(repr(p.name) for p in owners)} both define '{hook}'; "
                                  f"they cannot be combined in '{self.name}'")
            if owners:
                owner = owners[0]
                self.owners[hook] = owner.name
                bound = getattr(owner, hook)
                setattr(self, hook, bound)          # the composite's hook is the owner's
                for p in parts:
                    if p is not owner:
                        setattr(p, hook, bound)     # and so is every other part's (instance attribute)

    def setup(self, ctx: "SetupContext") -> None:
        for p in self.parts:
            p.setup(ctx)

    def end_epoch(self, trainer: "TrainingContext", valid: dict[str, float]) -> None:
        for p in self.parts:
            p.end_epoch(trainer, valid)

    def param_values(self) -> dict[str, Any]:
        return {f"{p.name}.{k}": v for p in self.parts for k, v in p.param_values().items()}

    def state_dict(self) -> dict[str, Any]:
        # flat "part.key" names, so the trainer's log picks up scalar state of every part
        return {f"{p.name}.{k}": v for p in self.parts for k, v in p.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for p in self.parts:
            prefix = f"{p.name}."
            p.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
