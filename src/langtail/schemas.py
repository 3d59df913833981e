"""Column contracts of every Parquet artifact: ``*_COLUMNS`` (name -> pandas dtype) and, where
a writer fixes the Arrow types, ``*_SCHEMA`` (``pyarrow.Schema``).

The full documentation of every artifact is ``docs/artifacts.md``; readers pass the dicts to
:func:`langtail.io.read_parquet`, which fails with a clear message on a mismatch. This module
imports nothing of langtail (every floor may read it).
"""
import pyarrow as pa

#: ``manifest.parquet`` (langtail.data.manifest)
MANIFEST_COLUMNS = {
    "image": "string",
    "label": "int32",
    "class_name": "string",
    "split": "string",
    "class_count": "int32",
    "group": "string",
}

#: the corpus stats' page-resolution columns (langtail.corpus.wiki_cache.page_resolution)
RESOLUTION_COLUMNS = ("page_status", "resolved_by", "redirect_from", "disambiguation_page")

CORPUS_COLUMNS = {
    "sentence_id": "int32",
    "class_id": "int32",
    "class_name": "string",
    "source": "string",
    "page_title": "string",
    "section": "string",
    "sentence": "string",
    "n_tokens": "int32",
    "page_id": "int64",
    "revision_id": "int64",
}

ANCHORS_COLUMNS = {
    "class_id": "int32",
    "sentence_id": "int32",
    "sentence": "string",
    "source": "string",
    "l_lin": "float32",
    "rank": "int32",
    "selected": "bool",
}

PER_CLASS_COLUMNS = {
    "class_id": "int32",
    "class_name": "string",
    "train_count": "int32",
    "group": "string",
    "n_test": "int32",
    "correct": "int32",
    "accuracy": "float64",
}

#: ``corpus.parquet`` as written (langtail.corpus.build)
CORPUS_SCHEMA = pa.schema([
    ("sentence_id", pa.int32()), ("class_id", pa.int32()), ("class_name", pa.string()),
    ("source", pa.string()), ("page_title", pa.string()), ("section", pa.string()),
    ("sentence", pa.string()), ("n_tokens", pa.int32()), ("page_id", pa.int64()),
    ("revision_id", pa.int64()),
])
#: ``corpus_stats.parquet``
STATS_SCHEMA = pa.schema([
    ("class_id", pa.int32()), ("class_name", pa.string()), ("page_title", pa.string()),
    ("has_page", pa.bool_()), ("n_wiki", pa.int32()), ("n_prompt", pa.int32()),
    ("n_descriptions", pa.int32()), ("n_caption", pa.int32()), ("n_total", pa.int32()),
    *((c, pa.string()) for c in RESOLUTION_COLUMNS),
])

#: ``skipped_images.parquet`` (langtail.data.skipped)
SKIPPED_COLUMNS = {"image": "string", "split": "string", "stage": "string", "reason": "string", "times": "int32"}
SKIPPED_SCHEMA = pa.schema([("image", pa.string()), ("split", pa.string()), ("stage", pa.string()),
                            ("reason", pa.string()), ("times", pa.int32())])

#: ``captions.parquet`` (langtail.captions.shards)
CAPTIONS_COLUMNS = {
    "image": "string",
    "image_index": "int64",
    "class_id": "int32",
    "split": "string",
    "caption": "string",
    "model": "string",
    "prompt": "string",
    "max_new_tokens": "int32",
}
CAPTIONS_SCHEMA = pa.schema([
    ("image", pa.string()),
    ("image_index", pa.int64()),
    ("class_id", pa.int32()),
    ("split", pa.string()),
    ("caption", pa.string()),
    ("model", pa.string()),
    ("prompt", pa.string()),
    ("max_new_tokens", pa.int32()),
])

#: predictions of ``langtail predict`` (one row per (image, rank); langtail.predict)
PREDICTION_COLUMNS = {"input": "int32", "image": "string", "rank": "int32", "class_id": "int32",
                      "class_name": "string", "probability": "float64", "error": "string"}
PREDICTION_SCHEMA = pa.schema([("input", pa.int32()), ("image", pa.string()), ("rank", pa.int32()),
                               ("class_id", pa.int32()), ("class_name", pa.string()),
                               ("probability", pa.float64()), ("error", pa.string())])
