"""torch.library custom ops (namespace ``alexnet_kernels``): one module per op."""
