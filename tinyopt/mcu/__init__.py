"""Device-true edge benchmark: int8 .tflite -> plain C99 (codegen), host bit-exactness against TFLM's reference
kernels (host), Cortex-M firmware under QEMU with measured flash, RAM and instructions (firmware), and one step
that does it all for a model and a device profile (on_device)."""
