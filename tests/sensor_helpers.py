"""A user's 1-D sensor model and its data, as the own-model and search tests use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sensor_regressor(directory: Path) -> tuple[Path, Path]:
    """Windows of 3 channels whose target is channel 0's amplitude (0.5 to 2.0), and a Conv1D regressor
    trained on them: (directory/sensor.keras, directory/sensors.npz)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    windows = rng.normal(0, 1, (900, 64, 3)).astype(np.float32)
    amplitude = rng.uniform(0.5, 2.0, 900).astype(np.float32)
    windows[:, :, 0] *= amplitude[:, None]  # the target: the amplitude of channel 0
    data = directory / "sensors.npz"
    np.savez(data, x_train=windows[:700], y_train=amplitude[:700], x_test=windows[700:], y_test=amplitude[700:])
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer((64, 3)),
            tf.keras.layers.Conv1D(8, 5, activation="relu"),
            tf.keras.layers.GlobalAveragePooling1D(),
            tf.keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse")
    model.fit(windows[:700], amplitude[:700], epochs=30, verbose=0)
    model.save(directory / "sensor.keras")
    return directory / "sensor.keras", data
