"""Accuracy and macro F1 for single-label classification, as an ``evaluate`` metric usable offline.

Load it by path (no Hub access needed): ``evaluate.load(adaptive_hf.metrics.metric_path("accuracy"))`` or
``adaptive_hf.metrics.load_metric("accuracy")``.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Accuracy (share of predictions equal to the reference) and F1 averaged over classes.

F1 per class is 2PR/(P+R); ``average="macro"`` (default) takes the unweighted mean over the classes that appear
in the predictions or references, ``"weighted"`` weights it by each class's support, ``"micro"`` equals accuracy
for single-label data. A class with no predicted and no true positives scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): Predicted class ids.
    references (list of int): True class ids.
    average (str): "macro" (default), "weighted" or "micro" for F1.
    labels (list of int, optional): Classes F1 averages over (default: those present in either input).
Returns:
    accuracy (float): In [0, 1].
    f1 (float): In [0, 1].
Examples:
    >>> metric = adaptive_hf.metrics.load_metric("accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666, 'f1': 0.6666666666666666}
"""

_CITATION = ""


class Accuracy(evaluate.Metric):
    """Accuracy and F1 (macro by default) for single-label classification."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="macro", labels=None):
        if average not in ("macro", "weighted", "micro"):
            raise ValueError(f"`average` must be 'macro', 'weighted' or 'micro'; got {average!r}.")
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise ValueError("No predictions: add at least one prediction/reference pair.")
        accuracy = float((predictions == references).mean())
        if average == "micro":
            return {"accuracy": accuracy, "f1": accuracy}
        classes = np.asarray(labels if labels is not None else np.union1d(predictions, references), dtype=np.int64)
        scores, support = [], []
        for c in classes:
            true_positive = np.sum((predictions == c) & (references == c))
            predicted = np.sum(predictions == c)
            actual = np.sum(references == c)
            denominator = predicted + actual
            scores.append(2.0 * true_positive / denominator if denominator else 0.0)
            support.append(actual)
        scores, support = np.asarray(scores), np.asarray(support, dtype=np.float64)
        if average == "weighted":
            f1 = float((scores * support).sum() / support.sum()) if support.sum() else 0.0
        else:
            f1 = float(scores.mean())
        return {"accuracy": accuracy, "f1": f1}
