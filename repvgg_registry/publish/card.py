"""The README.md model card that travels inside each artifact (and, later, to model hubs)."""

from __future__ import annotations

import html
import re

from ..errors import one_line
from .int8 import QUANTIZATION_WARNING
from .tasks import FEATURE_MAPS, OUTPUT_KEYS, base_task, serving_task

#: The one wording of the random-weights warning, on cards and on the served page.
RANDOM_WEIGHTS_BANNER = "random weights, for pipeline tests only; the reference accuracy does not apply"


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def markdown_text(value: object) -> str:
    """A value (a checkpoint's file name, say) as inert text inside Markdown and a table cell: one
    line (newlines folded, control characters escaped), Markdown punctuation (``|`` included)
    backslash-escaped, HTML escaped, so ``<img onerror=...>`` stays text and cannot split a row."""
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line(value)), quote=True)


def random_weights_banner(weights: dict) -> str:
    """A Markdown warning block for random weights, else nothing."""
    return f"> **Warning: {RANDOM_WEIGHTS_BANNER}.**\n\n" if weights.get("source") == "random" else ""


_TASK_TITLE = {
    "feature_vector": "image feature vector",
    "classification": "image classifier",
    FEATURE_MAPS: "feature maps (dense-prediction backbone)",
}
_PIPELINE = {
    "feature_vector": "image-feature-extraction",
    "classification": "image-classification",
    FEATURE_MAPS: "image-feature-extraction",
}


def output_stride_text(meta: dict) -> str:
    """``32`` or ``16 (stage 4 at stride 1, timm's dilation rule)``: the card's and the page's line."""
    stride = meta.get("output_stride", 32)
    if stride == 32:
        return "32"
    stages = "stage 4" if stride == 16 else "stages 3 and 4"
    return f"{stride} ({stages} at stride 1, dilated by timm's `output_stride` rule)"


def feature_maps_lines(output: dict) -> list[str]:
    """One Markdown bullet per map: its key, real stride and channels."""
    return [
        f"  * `{m['key']}`: float32 `[batch, ceil(height/{m['stride']}), ceil(width/{m['stride']}), "
        f"{m['channels']}]` (stride {m['stride']})"
        for m in output["maps"]
    ]


def yaml_header(meta: dict, extra_tags: tuple[str, ...] = ()) -> str:
    """Hugging Face style front matter: tf-keras SavedModels, the task, license and data."""
    tags = ["repvgg", "tensorflow", "tf-hub", "savedmodel", "image-classification", *extra_tags]
    lines = [
        "---",
        "library_name: tf-keras",
        f"pipeline_tag: {_PIPELINE[base_task(meta['task'])]}",
        f"license: {meta['license'].lower()}",
        "datasets:",
        "- imagenet-1k",
        "tags:",
        *[f"- {tag}" for tag in dict.fromkeys(tags)],
        "---",
    ]
    return "\n".join(lines) + "\n"


#: How many class names a card lists before "...".
LABELS_SHOWN = 5


def is_custom(meta: dict) -> bool:
    """Whether an artifact is a model of its own (a ``--name``, or a head that is not ImageNet-1k's)
    rather than the variant's ImageNet release: its card then says what it is."""
    output = meta.get("output", {})
    labels_source = output.get("labels_source", "imagenet-1k")
    own_name = meta.get("name", meta["variant"].lower()) != meta["variant"].lower()
    return own_name or labels_source != "imagenet-1k" or output.get("num_classes", 1000) != 1000


def custom_model_text(meta: dict, labels: tuple[str, ...] | list[str] = ()) -> str:
    """The card section of a custom model: its base variant, classes, first labels, weights file."""
    weights = meta["weights"]
    num = meta["output"].get("num_classes")
    shown = ", ".join(f"`{markdown_text(label)}`" for label in list(labels)[:LABELS_SHOWN])
    more = ", ..." if len(labels) > LABELS_SHOWN else ""
    lines = [
        f"**{markdown_text(meta.get('name', meta['variant'].lower()))}** is a custom model built on "
        f"RepVGG-{markdown_text(meta['base_variant'] if 'base_variant' in meta else meta['variant'])}.",
        "",
        f"* classes: {num}" + (f" ({shown}{more})" if shown else ""),
        f"* labels: {markdown_text(meta['output'].get('labels_source', '-'))}",
        f"* weights: {markdown_text(weights.get('file') or weights.get('source'))}"
        + (f" (sha256 `{markdown_text(weights['sha256'])}`)" if weights.get("sha256") else ""),
    ]
    return "\n".join(lines) + "\n"


def model_card(meta: dict, *, handle: str | None = None, labels: tuple[str, ...] | list[str] = ()) -> str:
    """Markdown card with the numbers, the provenance and copy-paste snippets; a custom model
    (:func:`is_custom`) also says what it is (``labels``: its class names, the first few shown)."""
    task = meta["task"]
    name = meta["display_name"]
    size = meta["input"]["default_size"]
    where = handle or "path/to/this/folder"
    output = meta["output"]
    custom = custom_model_text(meta, labels) + "\n" if is_custom(meta) else ""
    train_note = (
        "`train.keras` beside it is the multi-branch train form with its head: fine-tune that (the RepVGG\n"
        "authors' advice), then fuse it with `repvgg_registry.variants.fusion.fuse`."
        if meta.get("fusion", {}).get("train_form", True)
        else "This model was built from a deploy-form (fused) source: there is no train form, so no\n"
        "`train.keras` ships with it."
    )
    tf_keras_use = None
    if task == FEATURE_MAPS:
        out_line = (
            "a dict of the stem's and each stage's output (after ReLU"
            + (" and SE" if meta["variant"] == "D2se" else "")
            + "), NHWC, keyed by nominal stride (the real one below output stride 32 is given):\n"
            + "\n".join(feature_maps_lines(output))
        )
        keras_use = (
            'maps = model(images)                 # {"stride_2": ..., "stride_32": ...}, images in [0, 1]\n'
            'p3, p4, p5 = maps["stride_8"], maps["stride_16"], maps["stride_32"]   # an FPN / YOLO neck\'s input'
        )
        tf_keras_use = f"""images = tf_keras.Input((None, None, 3))
maps = hub.KerasLayer("{where}", trainable=True)(images)
p3, p4, p5 = maps["stride_8"], maps["stride_16"], maps["stride_32"]"""
        head = ""
    elif task == "classification":
        if output.get("labels_source", "imagenet-1k") != "imagenet-1k":
            out_line = (
                f"`logits`: float32 `[batch, {output['num_classes']}]`, one per class, named line by line in "
                "`assets/labels.txt`."
            )
        else:
            out_line = (
                f"`logits`: float32 `[batch, {output['num_classes']}]`, ImageNet-1k classes 0..999 in "
                "`assets/labels.txt` (WordNet ids in `assets/synsets.txt`). **No background class**: 1000 "
                "outputs, not the 1001 of Google's TF Hub classifiers."
            )
        head = "tf_keras.layers.Softmax()"
        keras_use = "probabilities = keras.ops.softmax(model(images))       # images in [0, 1], any size"
    else:
        out_line = f"`feature_vector`: float32 `[batch, {output['num_features']}]`, globally pooled features."
        head = "tf_keras.layers.Dense(5)"
        keras_use = (
            f"model = keras.Sequential([keras.Input(({size}, {size}, 3)), model, keras.layers.Dense(5)])\n"
            'model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))'
        )
    if tf_keras_use is None:
        tf_keras_use = f"""model = tf_keras.Sequential([
    tf_keras.Input(({size}, {size}, 3)),
    hub.KerasLayer("{where}", trainable=True),
    {head},
])"""
    key = OUTPUT_KEYS[task][-1]
    weights = meta["weights"]
    keras_where = f"{handle}.keras" if handle else f"path/to/{task}.keras"
    provenance = markdown_text(weights["source"])
    if weights.get("sha256"):
        provenance += f" (sha256 `{markdown_text(weights['sha256'])}`)"
    top1 = meta["top1"] if meta["top1"] is not None else "not reported"
    if is_custom(meta):
        top1 = "does not apply: a custom model, not the ImageNet release"
        name = f"{meta.get('name', name)} ({name})"
    if weights.get("source") == "random":
        top1 = f"{top1} (does not apply: random weights)"
    return f"""{yaml_header(meta)}
# {markdown_text(name)} {_TASK_TITLE[task]} (fused, TF Hub SavedModel)

{random_weights_banner(weights)}
{custom}RepVGG ([Ding et al., 2021](https://arxiv.org/abs/2101.03697)) after structural
re-parameterization: every block is one 3x3 convolution + ReLU. Built by repvgg-registry
{meta["tool"]["repvgg_registry"]} with TensorFlow {meta["tool"]["tensorflow"]}.

| | |
|---|---|
| variant | {meta["variant"]} |
| task | {task} |
| output stride | {output_stride_text(meta)} |
| parameters | {meta["params"]:,} |
| GMACs | {meta["gmacs_224"]:.2f} at 224x224, {meta["gmacs_default"]:.2f} at {size}x{size} |
| reference top-1 (ImageNet-1k) | {top1} |
| weights | {provenance} |
| fusion check | max abs diff {meta["fusion"]["max_abs_diff"]:.2e} vs the train-time form |

## Input and output

* `images`: float32 `[batch, height, width, 3]`, RGB in [0, 1], any height and width
  (default {size}x{size}: resize the short side to {meta["input"]["resize_to"]} and centre-crop).
  ImageNet mean/std normalisation happens inside the model.
* {out_line}

## Use

Keras 3 (what `pip install tensorflow` gives): the same network ships as `{task}.keras` beside
this folder (`<N>.keras` in a hub), made of Keras' own layers only, so it loads without
repvgg-registry and fine-tunes with any optimizer:

```python
import keras
model = keras.saving.load_model("{keras_where}")
{keras_use}
```

{train_note}

tf_keras with `tensorflow_hub` (fine-tunable, `trainable=True`):

```python
import tf_keras, tensorflow_hub as hub
{tf_keras_use}
```

Keras 3 can also call this SavedModel through `TFSMLayer` (a local folder only). Fine-tuning it that
way needs an SGD-style optimizer in Keras 3.15: Adam fails with
`'<name>:0_momentum' is not a valid scope name`. For fine-tuning, use the `.keras` file.

```python
import keras
layer = keras.layers.TFSMLayer("{where}", call_endpoint="serving_default")
inputs = keras.Input(({size}, {size}, 3))
outputs = layer(inputs)["{key}"]
model = keras.Model(inputs, outputs)
```

TensorFlow:

```python
import tensorflow as tf
obj = tf.saved_model.load("{where}")
y = obj(images)                                   # reusable __call__(images, training=False)
y = obj.signatures["serving_default"](images=images)["{key}"]
```

Inference only (a process that never trains this model): freeze the signature in memory. With
the weights as graph constants, oneDNN keeps them in its blocked layout instead of reading TF's
plain layout on every call (up to 1.7x faster at batch 1 for the wide B variants). The frozen copy
is a snapshot of the weights; the SavedModel itself stays fine-tunable. Do not also run the
unfrozen signature in that process: TF shares oneDNN primitives between graphs with the same
shapes, whatever their weight layout, and the gain then comes and goes.

```python
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
serve = convert_variables_to_constants_v2(obj.signatures["serving_default"])
y = serve(images=images)[0]                       # or repvgg_registry.publish.frozen.freeze_serving
```

{deploy_section(meta, handle)}License: {meta["license"]}.
"""


def deploy_section(meta: dict, handle: str | None = None) -> str:
    """The card's "Deployment files" section: each file converted from this SavedModel, its check,
    and how to run it; nothing when the build made none. ``handle``: where a hub serves it."""
    deploy = meta.get("deploy") or {}
    task = meta["task"]
    key = OUTPUT_KEYS[task][0]
    files = {
        # a hub's TF Serving base path: the serving task's folder, whose children are the versions
        "serving": f"{handle.rsplit('/', 2)[0]}/{serving_task(task)}" if handle else f"{serving_task(task)}/",
        "tflite": f"{handle}.tflite" if handle else f"{task}.tflite",
        "onnx": f"{handle}.onnx" if handle else f"{task}.onnx",
    }
    titles = {"serving": "inference-only SavedModel", "tflite": "LiteRT fp32", "onnx": "ONNX (NHWC input)"}
    rows = [
        f"| {titles[fmt]} | `{markdown_text(files[fmt])}` | max abs diff {deploy[fmt]['max_abs_diff']:.2e} |"
        for fmt in titles
        if fmt in deploy
    ]
    int8 = deploy.get("tflite_int8")
    if int8:
        rows.append(f"| LiteRT int8 | `{markdown_text(int8['file'])}` | {int8_figures(int8)} |")
    if not rows:
        return ""
    snippets = [f"> **int8:** {QUANTIZATION_WARNING}"] if int8 else []
    if "tflite" in deploy:
        snippets.append(f"""```python
from ai_edge_litert.interpreter import Interpreter   # pip install ai-edge-litert
run = Interpreter("{files["tflite"]}", num_threads=2).get_signature_runner()
y = run(images=images)["{key}"]                    # images: float32 [batch, h, w, 3] in [0, 1]
```""")
    if "onnx" in deploy:
        snippets.append(f"""```python
import onnxruntime as ort                            # NHWC input, like the SavedModel
session = ort.InferenceSession("{files["onnx"]}", providers=["CPUExecutionProvider"])
y = session.run(["{key}"], {{"images": images}})[0]
```""")
    if "serving" in deploy:
        snippets.append(
            f"TF Serving: `--model_base_path` is the `{task}-serving` folder of a hub (its children are the\n"
            "integer versions). Its weights are graph constants: it serves faster and cannot be fine-tuned."
        )
    table = "| file | where | check against this SavedModel |\n|---|---|---|\n" + "\n".join(rows)
    intro = "## Deployment files\n\nConverted from this SavedModel and checked against it at two sizes:\n\n"
    return intro + table + "\n\n" + "\n\n".join(snippets) + "\n\n"


def int8_figures(record: dict) -> str:
    """``top-1 agreement 93.8%, mean cosine 0.9921 on 8 held-out images`` of an int8 record."""
    parts = []
    if "top1_agreement" in record:
        parts.append(f"top-1 agreement with fp32 {record['top1_agreement']:.1%}")
    parts.append(f"mean cosine {record['mean_cosine']:.4f}")
    return ", ".join(parts) + f" on {record['held_out_images']} held-out images"


def serving_card(meta: dict, *, handle: str | None = None) -> str:
    """The card of ``<task>-serving/``: an inference-only SavedModel for TF Serving."""
    task = meta["base_task"]
    key = OUTPUT_KEYS[task][0]
    where = handle or f"path/to/{meta['task']}"
    check = meta["serving_check"]
    return f"""{yaml_header(meta)}
# {markdown_text(meta["display_name"])} {_TASK_TITLE[task]}, inference-only SavedModel

{random_weights_banner(meta["weights"])}The `{task}` SavedModel of this version with every weight folded into a graph
constant (oneDNN then keeps the convolution weights in its blocked layout: faster at small batches) and
`serving_default` as its only signature. It cannot be fine-tuned: use `{task}` for that.
Checked against the `{task}` SavedModel: max abs diff {check["max_abs_diff"]:.2e} (bound {check["rtol"]:g} relative).

* `images`: float32 `[batch, height, width, 3]`, RGB in [0, 1], any size (default
  {meta["input"]["default_size"]}x{meta["input"]["default_size"]}); normalisation is inside.
* `{key}`: as in the `{task}` SavedModel.

TF Serving: `tensorflow_model_server --model_name=repvgg --model_base_path=<hub>/<ns>/<model>/{meta["task"]}`
finds the integer versions below it.

```python
import tensorflow as tf
serve = tf.saved_model.load("{where}").signatures["serving_default"]
y = serve(images=images)["{key}"]
```

License: {meta["license"]}.
"""
