"""The two TF Hub image tasks every release holds, and their output names (no TensorFlow here)."""

TASKS = ("feature_vector", "classification")
OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}
