"""The ML kit: Keras models, training and fine-tuning, distillation, 1-D convolutions, the task metric."""
