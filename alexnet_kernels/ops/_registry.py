"""One description of an op with autograd -> its torch.library custom ops, their autograd and the eager path.

An op is described once, by
    forward(*inputs) -> output(s)       the forward kernel op: resolves its backend and runs the kernels
    forward_fake                        its fake (meta) kernel: output shapes, dtypes and strides
    backward(*args) -> gradient(s)      the backward kernel op (called from `grads` only)
    backward_fake                       its fake kernel
    save(inputs, output, residuals) -> (tensors, params)
                                        what autograd keeps: tensors, and the non-tensor rest
    forward_residuals (optional)        (*inputs) -> (forward's output, residuals): the same forward, also
                                        returning what its kernels made that the backward can reuse (conv:
                                        x's channels_last copy).  The eager path calls it and passes the
                                        residuals to save; the traced path, whose forward op is opaque, passes
                                        None (the backward then makes them again: the same values)
    grads(backward, saved, params, grad_outputs, needs_input_grad) -> one gradient (or None) per input
                                        the autograd formula, calling `backward` (the op, or the function)
    non_differentiable                  indices of outputs that get no gradient (pool's offsets)
forward's and backward's names and annotations are the custom ops' names and schemas
(alexnet_kernels::<name>).  DifferentiableOp registers both ops with their fakes and the formula
(save, grads) as the forward op's autograd, and builds an autograd.Function from the same save and grads
calling forward and backward directly.  Calling the DifferentiableOp runs that Function in eager mode (without
the custom-op dispatcher's per-call Python cost, which dominates small tensors) and the custom op while
torch.compile traces.  Both paths share every function above, backend resolution included (each
kernel op resolves its own backend from its arguments), so they cannot drift.
"""
import torch
import torch.autograd.forward_ad as forward_ad
from torch.autograd.function import once_differentiable

NAMESPACE = "alexnet_kernels"


def needs_autograd(*tensors):
    """Whether a call must take the op with autograd rather than a forward without it (max-pool's and the fused
    block's inference path): grad mode on and a tensor requires grad, or a tensor carries a forward-mode tangent
    (fwAD.dual_level, torch.func.jvp) -- the op's autograd.Function then says it has no jvp, where a call
    without autograd would drop the tangent silently."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return True
    return forward_ad._current_level >= 0 and any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def kernel_op(impl, fake):
    """Register impl as the custom op alexnet_kernels::<impl.__name__> (its annotations are the schema), with
    `fake` as its fake kernel; returns the op.  impl itself stays the eager path's function."""
    op = torch.library.custom_op("%s::%s" % (NAMESPACE, impl.__name__), impl, mutates_args=())
    op.register_fake(fake)
    return op


class DifferentiableOp:
    """A forward/backward pair of kernel ops with one autograd formula (see the module docstring)."""

    def __init__(self, name, forward, forward_fake, backward, backward_fake, save, grads, non_differentiable=(),
                 forward_residuals=None):
        self.forward_op = kernel_op(forward, forward_fake)
        self.backward_op = kernel_op(backward, backward_fake)
        self._traced = getattr(getattr(torch.ops, NAMESPACE), forward.__name__)
        traced_backward = getattr(getattr(torch.ops, NAMESPACE), backward.__name__)

        def setup_context(ctx, inputs, output, residuals=None):
            if non_differentiable:
                ctx.mark_non_differentiable(*(output[i] for i in non_differentiable))
            tensors, ctx.params = save(inputs, output, residuals)
            ctx.save_for_backward(*tensors)

        def traced_grads(ctx, *grad_outputs):
            return grads(traced_backward, ctx.saved_tensors, ctx.params, grad_outputs, ctx.needs_input_grad)

        torch.library.register_autograd(self.forward_op, traced_grads, setup_context=setup_context)

        if forward_residuals is None:
            def eager_forward(ctx, *inputs):
                output = forward(*inputs)
                setup_context(ctx, inputs, output)
                return output
        else:
            def eager_forward(ctx, *inputs):
                output, residuals = forward_residuals(*inputs)
                setup_context(ctx, inputs, output, residuals)
                return output

        @once_differentiable  # the backward kernels have no derivative: double backward raises, never zeros
        def eager_backward(ctx, *grad_outputs):
            return grads(backward, ctx.saved_tensors, ctx.params, grad_outputs, ctx.needs_input_grad)

        self.Function = type(name + "Function", (torch.autograd.Function,), {
            "__doc__": "The eager path of alexnet_kernels::%s (see ops/_registry.py)." % forward.__name__,
            "__module__": forward.__module__,
            "forward": staticmethod(eager_forward), "backward": staticmethod(eager_backward)})
        self._apply = self.Function.apply

    def __call__(self, *inputs):
        """The op with autograd: the custom op while torch.compile traces, else the eager Function."""
        if torch.compiler.is_compiling():
            return self._traced(*inputs)
        return self._apply(*inputs)
