"""The two TF Hub image tasks every release holds, and their output names (no TensorFlow here)."""

TASKS = ("feature_vector", "classification")
OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}


def describe_output(output: dict) -> str:
    """``logits [batch, 1000]`` or ``feature_vector [batch, 1280]`` from metadata.json's
    ``output``: how pages, cards and the CLI show an output, instead of a Python dict."""
    width = output.get("num_classes", output.get("num_features", "?"))
    return f"{output.get('name', '?')} [batch, {width}]"
