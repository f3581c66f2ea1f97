"""Knowledge distillation: fine-tune the model on the labels and on a teacher's softened outputs. The
teacher is the user's (techniques.distill.teacher) or a copy of the model widened by teacher_width and
trained here from scratch on the same train split (saved beside the student as teacher.keras)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.ml.distillation import as_logits, distillation_loss, widened, with_teacher
from tinyopt.ml.models import load_model, save_model
from tinyopt.ml.training import (
    FineTuning,
    Objective,
    collapsed,
    compile_for_task,
    final_activation,
    keras_score,
    output_kind,
    reestimate_batchnorm,
    train_epochs,
)
from tinyopt.params import DistillParams, TaskParams, TrainParams


def teacher_outputs(teacher, x: np.ndarray, kind: str) -> np.ndarray:
    return as_logits(teacher.predict(x, batch_size=1024, verbose=0), final_activation(teacher), kind)


class Distill(FineTuning):
    """The model fine-tuned to match a larger teacher's softened outputs as well as the labels
    (label_weight x the task's loss + (1 - label_weight) x T^2 x KL at temperature T)."""

    token = "distill"

    def check(self, parent: Path, prepared: Path, settings: DistillParams, train: TrainParams) -> None:
        if settings.teacher and not Path(settings.teacher).exists():
            raise UserError(
                f"techniques.distill.teacher: {settings.teacher} does not exist; give a trained Keras model, "
                "or null to have tinyopt train one"
            )

    def wrap(self, model, settings: DistillParams, checked):
        return model, ""  # the student starts from the parent's weights

    def schedule(self, settings: DistillParams, train: TrainParams) -> tuple[int, float, int]:
        return settings.fine_tune_epochs, settings.learning_rate, train.early_stopping_patience

    def objective(self, model, data, settings: DistillParams, train, task: TaskParams, out_dir: Path) -> Objective:
        outputs = int(np.prod(model.output_shape[1:]))
        kind = output_kind(task, outputs)
        if kind == "reconstruction":
            raise NotApplicable(
                "distill matches a teacher's class or value outputs; a reconstruction model's target is its "
                "own input, which every fine-tune already fits"
            )
        if kind == "binary" and outputs != 1:
            raise NotApplicable(f"distill reads an anomaly score from one output; this model has {outputs}")
        if settings.teacher:
            teacher, files, curves = load_model(settings.teacher), (), {}
            about = f"teacher {Path(settings.teacher).name}"
        else:
            teacher, files, about, curves = self.train_teacher(model, data, settings, train, task, out_dir)
        if teacher.output_shape[1:] != model.output_shape[1:]:
            raise UserError(
                f"techniques.distill.teacher: its outputs {teacher.output_shape[1:]} differ from the model's "
                f"{model.output_shape[1:]}; a teacher scores the same classes or targets"
            )
        val_score = keras_score(teacher, data["x_val"], data["y_val"], task)
        student = keras_score(model, data["x_val"], data["y_val"], task)  # still the parent's weights
        if collapsed(task.score_metric, student, val_score):
            raise NotApplicable(
                f"the teacher's validation {task.score_metric} {val_score:.2f} is far below the student's "
                f"{student:.2f}: distilling from it would teach the student its mistakes"
            )
        fitted = {
            **data,
            "y_train": with_teacher(data["y_train"], teacher_outputs(teacher, data["x_train"], kind)),
            "y_val": with_teacher(data["y_val"], teacher_outputs(teacher, data["x_val"], kind)),
        }
        labels = outputs if kind == "values" else 1
        from_logits = final_activation(model) not in ("softmax", "sigmoid")
        loss = distillation_loss(kind, labels, settings.temperature, settings.label_weight, from_logits)
        notes = (
            f"distilled from {about} ({teacher.count_params():,} parameters, validation {task.score_metric} "
            f"{val_score:.4f}) at temperature {settings.temperature:g}, label weight {settings.label_weight:g}"
        )
        return Objective(data=fitted, loss=loss, notes=notes, files=files, curves=curves)

    @staticmethod
    def train_teacher(model, data, settings: DistillParams, train: TrainParams, task: TaskParams, out_dir: Path):
        teacher = widened(model, settings.teacher_width)
        compile_for_task(teacher, task, train.learning_rate)
        fit = train_epochs(
            teacher, data, settings.teacher_epochs or train.epochs, train.batch_size, train.early_stopping_patience
        )
        reestimate_batchnorm(teacher, data["x_train"], train.batch_size)  # trained from scratch: its BN too
        path = out_dir / "teacher.keras"
        save_model(teacher, path)
        about = f"a {settings.teacher_width:g}x wider teacher trained here ({fit.epochs_run} epochs)"
        return teacher, (path,), about, {f"teacher.{key}": values for key, values in fit.history.items()}


DISTILL = Distill()
