"""TorchScript: our modules run Python that torch.jit.script cannot compile (argument checks, backend
choice, custom-op dispatch).  Without this, scripting failed on whichever construct TorchScript met first
(a keyword-only argument, a re-typed variable), which named neither the module nor what to use instead."""


class NotScriptable:
    """Mixin for our nn.Modules: torch.jit.script of them (or of a model holding them) raises at once with
    the module's name and the alternatives.  torch.jit.trace, torch.compile and torch.export work.  Their
    repr names the package (alexnet_kernels.LocalResponseNorm(...)), so print(model) after optimize() tells
    them from torch's modules of the same class name and arguments."""

    def _get_name(self):  # nn.Module.__repr__'s name for the module
        return "alexnet_kernels." + type(self).__name__

    def __prepare_scriptable__(self):  # torch.jit.script calls it on every module it compiles
        raise RuntimeError(
            "%s (alexnet_kernels) does not support torch.jit.script: its forward calls Python that TorchScript "
            "cannot compile; use torch.compile, torch.export.export or torch.jit.trace instead" %
            type(self).__name__)
