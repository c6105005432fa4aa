"""The tasks of a release and their output names (no TensorFlow here).

``TASKS`` are the two TF Hub image tasks, each a SavedModel folder (with its archive) and the same
fused network as a ``.keras`` file. ``train`` is the multi-branch train form with its head, shipped
only as ``train.keras`` (what you fine-tune before fusing). ``RELEASE_TASKS`` are all three: the
handles one published version has.
"""

TASKS = ("feature_vector", "classification")
TRAIN = "train"
RELEASE_TASKS = (*TASKS, TRAIN)
OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}


def has_savedmodel(task: str) -> bool:
    """Whether ``task`` ships a SavedModel folder and its TF Hub archive (``train`` does not)."""
    return task in TASKS


def describe_output(output: dict) -> str:
    """``logits [batch, 1000]`` or ``feature_vector [batch, 1280]`` from metadata.json's
    ``output``: how pages, cards and the CLI show an output, instead of a Python dict."""
    width = output.get("num_classes", output.get("num_features", "?"))
    return f"{output.get('name', '?')} [batch, {width}]"


def output_width(output: dict) -> int | None:
    """The output's last dimension from metadata.json's (or a manifest's) ``output``."""
    return output.get("num_classes") or output.get("num_features")
