"""Which export an ONNX file is, and the manifest fields that follow from it: a table, first match wins.

Each Recogniser looks at a ModelSurvey (inputs, outputs, producer,
metadata) and, if it knows the export, drafts the manifest: every field is
either read from the model (with where it came from) or a *choice*, the
exporter's usual convention that the file cannot prove, written as such in
the manifest for the author to confirm. Adding an export means adding a row
to RECOGNISERS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from robot_model_deployer.bundle.manifest import DetectionFormat, Task
from robot_model_deployer.inference.model_survey import ModelSurvey, TensorInfo, literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 640
# Ultralytics' metadata task -> our task value; a value this rmd has no Task for is refused by name.
ULTRALYTICS_TASKS = {"detect": "detection", "classify": "classification", "segment": "instance_segmentation",
                     "pose": "pose", "semantic": "segmentation"}
ULTRALYTICS_KEYS = ("task", "names", "imgsz", "stride")
TF_SSD_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


class RecognitionError(ValueError):
    """The model is no export rmd bundle init knows, or one it cannot serve."""


@dataclass(frozen=True)
class Value:
    """A manifest value; ``choice``: not read from the model, the author should confirm it."""

    value: Any
    note: str = ""
    choice: bool = False


@dataclass
class Draft:
    """What init will write: the recognised export, the task, the sections and the labels the model names."""

    export: str
    task: Task
    sections: dict[str, dict[str, Value]] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    labels_note: str = ""


@dataclass(frozen=True)
class Recogniser:
    export: str
    matches: Callable[[ModelSurvey], bool]
    draft: Callable[[ModelSurvey], Draft]


def recognise(survey: ModelSurvey) -> Draft:
    """The first recogniser that knows ``survey``'s export drafts the manifest; RecognitionError if none does."""
    for recogniser in RECOGNISERS:
        if recogniser.matches(survey):
            return recogniser.draft(survey)
    ins = ", ".join(f"{i.name} {list(i.shape)} {i.dtype}" for i in survey.inputs)
    outs = ", ".join(f"{o.name} {list(o.shape)}" for o in survey.outputs)
    raise RecognitionError(f"cannot tell which export this is (inputs {ins}; outputs {outs}); write manifest.yaml "
                           "by hand from the annotated examples in docs/manifests/")


def task_named(value: str, export: str) -> Task:
    try:
        return Task(value)
    except ValueError:
        raise RecognitionError(f"{export}: this rmd has no '{value}' task, so it cannot serve this model") from None


# Inputs -------------------------------------------------------------------------

def image_input(survey: ModelSurvey) -> TensorInfo | None:
    """The one rank-4 image input (RT-DETR's second input is a size, not an image)."""
    images = [i for i in survey.inputs if len(i.shape) == 4]
    return images[0] if len(images) == 1 else None


def layout_of(tensor: TensorInfo) -> str | None:
    if tensor.shape[1] in (1, 3):
        return "nchw"
    if tensor.shape[3] in (1, 3):
        return "nhwc"
    return None


def input_section(survey: ModelSurvey, size: tuple[int, int] | None, size_source: str, **fields: Value) -> dict:
    """width, height, name, layout, dtype, colour from the graph (size from ``size`` when the graph leaves it open)."""
    tensor = image_input(survey)
    assert tensor is not None  # every matcher checks it
    layout = layout_of(tensor) or "nchw"
    h_axis, w_axis, c_axis = (2, 3, 1) if layout == "nchw" else (1, 2, 3)
    height, width = tensor.static(h_axis), tensor.static(w_axis)
    section: dict[str, Value] = {}
    if height and width:
        section["width"], section["height"] = Value(width, "from the model's input shape"), Value(height)
    elif size is not None:
        # From the exporter's metadata it is a fact; from a convention, a choice.
        guessed = not size_source.startswith("from ")
        section["width"] = Value(size[1], f"{size_source}; the graph leaves it open", choice=guessed)
        section["height"] = Value(size[0], choice=guessed)
    else:
        section["width"] = Value(DEFAULT_SIZE, "the model accepts any size: set the size it was trained at",
                                 choice=True)
        section["height"] = Value(DEFAULT_SIZE, choice=True)
    if len(survey.inputs) > 1:
        section["name"] = Value(tensor.name, "the image input (the model has others)")
    section["layout"] = Value(layout, f"from the model's input shape {list(tensor.shape)}")
    dtype = tensor.dtype if tensor.dtype in ("float32", "float16", "uint8") else "float32"
    section["dtype"] = Value(dtype, "from the model's input type")
    if tensor.shape[c_axis] == 1:
        section["color_order"] = Value("gray", "one input channel")
    section.update(fields)
    # Normalisation does not apply to raw uint8 inputs, and per-channel values not to one channel.
    for key in ("scale", "mean", "std") if dtype == "uint8" else ("mean", "std") if "color_order" in section else ():
        section.pop(key, None)
    return section


def _single_output_rank(survey: ModelSurvey, rank: int) -> TensorInfo | None:
    return survey.outputs[0] if len(survey.outputs) == 1 and len(survey.outputs[0].shape) == rank else None


# Ultralytics: metadata names, stride, imgsz and task ------------------------------

def _is_ultralytics(survey: ModelSurvey) -> bool:
    return "task" in survey.metadata and "names" in survey.metadata and image_input(survey) is not None


def _ultralytics(survey: ModelSurvey) -> Draft:
    meta = survey.metadata
    export = f"Ultralytics {meta['task']} export (metadata {', '.join(k for k in ULTRALYTICS_KEYS if k in meta)})"
    task = task_named(ULTRALYTICS_TASKS.get(meta["task"], meta["task"]), export)
    names = literal(meta["names"])
    labels = tuple(str(names[k]) for k in sorted(names)) if isinstance(names, dict) and all(
        isinstance(k, int) for k in names) else ()
    imgsz = literal(meta.get("imgsz", ""))
    size = (int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, list) and len(imgsz) == 2 else None
    draft = Draft(export, task, labels=labels, labels_note="from the model's metadata (names)")
    scale = Value(1.0 / 255.0, "Ultralytics feeds pixels / 255, no mean or std")
    if task is Task.CLASSIFICATION:
        draft.sections["input"] = input_section(
            survey, size, "from metadata imgsz", resize=Value("center_crop", "Ultralytics classify: resize, crop"),
            interpolation=Value("pil_bilinear", "Ultralytics classify transforms resize with torchvision (PIL)"),
            scale=scale)
        draft.sections["classification"] = {"softmax": Value(False, "the export ends in softmax")}
        return draft
    draft.sections["input"] = input_section(
        survey, size, "from metadata imgsz",
        resize=Value("letterbox", "Ultralytics LetterBox: centred, fill 114, cv2 INTER_LINEAR"),
        letterbox_align=Value("center"), letterbox_fill=Value(114),
        interpolation=Value("opencv_linear"), scale=scale)
    if task is Task.DETECTION:
        draft.sections["detection"] = {"format": Value(_ultralytics_format(survey, len(labels), meta).value,
                                                       "from the output shape")}
    elif task is Task.INSTANCE_SEGMENTATION:
        protos = next((o for o in survey.outputs if len(o.shape) == 4), None)  # [1, M, H/4, W/4]
        if protos is None or not isinstance(protos.shape[1], int):
            raise RecognitionError(f"{export}: no [1, M, H, W] mask protos output among "
                                   f"{[list(o.shape) for o in survey.outputs]}")
        draft.sections["instances"] = {
            "mask_coefficients": Value(protos.shape[1], f"channels of the protos output {list(protos.shape)}"),
            "protos_output": Value(protos.name)}
    elif task is Task.POSE:
        kpt_shape = literal(meta.get("kpt_shape", ""))
        if not (isinstance(kpt_shape, list) and len(kpt_shape) == 2 and all(isinstance(v, int) for v in kpt_shape)):
            raise RecognitionError(f"{export}: metadata kpt_shape {meta.get('kpt_shape')!r} is not [K, V]")
        draft.sections["pose"] = {"keypoints": Value(kpt_shape[0], "from metadata kpt_shape"),
                                  "values_per_keypoint": Value(kpt_shape[1])}
    elif task is Task.SEGMENTATION:
        out = survey.outputs[0]
        ids = len(out.shape) == 3 or out.dtype.startswith("int") or survey.output_ops.get(out.name) == "ArgMax"
        draft.sections["segmentation"] = {"format": Value("class_ids" if ids else "logits",
                                                          f"from the output {list(out.shape)} {out.dtype}")}
    return draft


def _ultralytics_format(survey: ModelSurvey, classes: int, meta: dict[str, str]) -> DetectionFormat:
    out = survey.outputs[0]
    if len(out.shape) == 3 and out.shape[2] == 6 and (literal(meta.get("end2end", "")) is True or classes + 4 != 6):
        return DetectionFormat.END2END
    if len(out.shape) == 3 and out.shape[1] == 4 + classes:
        return DetectionFormat.YOLOV8
    if len(out.shape) == 3 and out.shape[2] == 4 + classes:
        return DetectionFormat.DETR
    raise RecognitionError(f"Ultralytics detect export with output {out.name} {list(out.shape)}, which is none of "
                           f"[1, 4+C, N], [1, K, 6] or [1, Q, 4+C] for the {classes} names in its metadata")


# Detectors recognised by their outputs ---------------------------------------------

def _is_tf_ssd(survey: ModelSurvey) -> bool:
    names = {o.name.split(":")[0] for o in survey.outputs}
    return all(n in names for n in TF_SSD_OUTPUTS[:3]) and image_input(survey) is not None


def _tf_ssd(survey: ModelSurvey) -> Draft:
    draft = Draft("TF Object Detection API export (detection_boxes, detection_scores, detection_classes outputs)",
                  Task.DETECTION, labels_note="TF OD class ids start at 1 (label map ids): make line 1 a placeholder for id 0")
    draft.sections["input"] = input_section(
        survey, None, "",
        resize=Value("stretch", "fixed_shape_resizer, as SSD configs use; keep_aspect_ratio_resizer exports: "
                     "letterbox with letterbox_align top_left and letterbox_fill 0", choice=True),
        interpolation=Value("opencv_linear", "TF bilinear without antialias"))
    draft.sections["detection"] = {"format": Value(DetectionFormat.TF_SSD.value, "from the output names")}
    return draft


def _is_rtdetr(survey: ModelSurvey) -> bool:
    names = {o.name for o in survey.outputs}
    return {"labels", "boxes", "scores"} <= names and any(i.name == "orig_target_sizes" for i in survey.inputs)


def _rtdetr(survey: ModelSurvey) -> Draft:
    draft = Draft("RT-DETR / D-FINE official export (orig_target_sizes input; labels, boxes, scores outputs)",
                  Task.DETECTION)
    draft.sections["input"] = input_section(
        survey, (DEFAULT_SIZE, DEFAULT_SIZE), "RT-DETR's deploy size",
        resize=Value("stretch", "the official deploy script resizes to 640x640", choice=True),
        interpolation=Value("pil_bilinear", "torchvision Resize on PIL images", choice=True),
        scale=Value(1.0 / 255.0))
    draft.sections["detection"] = {"format": Value(DetectionFormat.RTDETR.value, "from the inputs and outputs")}
    return draft


def _is_yolo_shaped(survey: ModelSurvey) -> bool:
    out = _single_output_rank(survey, 3)
    return out is not None and image_input(survey) is not None and all(isinstance(d, int) for d in out.shape[1:])


def _yolo_shaped(survey: ModelSurvey) -> Draft:
    out = survey.outputs[0]
    rows, cols = int(out.shape[1]), int(out.shape[2])
    if cols == 6:
        fmt, what = DetectionFormat.END2END, "[1, K, 6]: x1, y1, x2, y2, score, class (NMS-free)"
    elif rows < cols:
        fmt, what = DetectionFormat.YOLOV8, f"[1, 4+C, N] with C = {rows - 4} (YOLOv8 / YOLO11 layout)"
    else:
        fmt, what = DetectionFormat.YOLO, f"[1, N, 5+C] with C = {cols - 5} (YOLOv5 layout, objectness)"
    draft = Draft(f"detector without exporter metadata, output {out.name} {list(out.shape)}", Task.DETECTION)
    draft.sections["input"] = input_section(
        survey, None, "",
        resize=Value("letterbox", "the YOLO convention; no metadata says so", choice=True),
        letterbox_align=Value("center", choice=True), letterbox_fill=Value(114, choice=True),
        interpolation=Value("opencv_linear", choice=True), scale=Value(1.0 / 255.0, choice=True))
    draft.sections["detection"] = {"format": Value(fmt.value, f"from the output shape {what}", choice=True)}
    return draft


# Classifiers recognised by their outputs --------------------------------------------

def _is_classifier(survey: ModelSurvey) -> bool:
    out = _single_output_rank(survey, 2)
    tensor = image_input(survey)
    return out is not None and tensor is not None and layout_of(tensor) is not None and (out.static(1) or 0) >= 2


def _classifier(survey: ModelSurvey) -> Draft:
    tensor = image_input(survey)
    assert tensor is not None
    ends_in_softmax = survey.output_ops.get(survey.outputs[0].name) == "Softmax"
    softmax = Value(not ends_in_softmax, "the graph ends in Softmax" if ends_in_softmax else
                    "the graph ends before any softmax (logits)")
    if layout_of(tensor) == "nchw":
        draft = Draft(f"PyTorch-style classifier (torchvision convention), output {list(survey.outputs[0].shape)}",
                      Task.CLASSIFICATION)
        draft.sections["input"] = input_section(
            survey, (224, 224), "torchvision's usual size",
            resize=Value("center_crop", "torchvision presets: resize then centre crop (they resize to 256 for "
                         "224, a crop rmd takes from the whole short side)", choice=True),
            interpolation=Value("pil_bilinear", "torchvision's PIL transforms", choice=True),
            scale=Value(1.0 / 255.0), mean=Value(list(IMAGENET_MEAN), "ImageNet mean and std", choice=True),
            std=Value(list(IMAGENET_STD), "ImageNet mean and std", choice=True))
    else:
        draft = Draft(f"TensorFlow / Keras-style classifier (NHWC), output {list(survey.outputs[0].shape)}",
                      Task.CLASSIFICATION)
        draft.sections["input"] = input_section(
            survey, (224, 224), "Keras applications' usual size",
            resize=Value("stretch", choice=True), interpolation=Value("opencv_linear", choice=True),
            scale=Value(1.0 / 127.5, "Keras MobileNet/EfficientNet: [-1, 1]; ResNet50 wants caffe-style BGR means",
                        choice=True),
            mean=Value([1.0, 1.0, 1.0], choice=True))
    draft.sections["classification"] = {"softmax": softmax}
    return draft


RECOGNISERS: tuple[Recogniser, ...] = (
    Recogniser("ultralytics", _is_ultralytics, _ultralytics),
    Recogniser("tf_ssd", _is_tf_ssd, _tf_ssd),
    Recogniser("rtdetr", _is_rtdetr, _rtdetr),
    Recogniser("classifier", _is_classifier, _classifier),
    Recogniser("yolo_shaped", _is_yolo_shaped, _yolo_shaped),
)
