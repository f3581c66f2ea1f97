"""Running a .tflite: LiteRT on the host, TensorFlow Lite Micro (arena, bit-exactness), C arrays for TFLM projects."""
