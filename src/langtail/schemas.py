"""Column contracts (name -> pandas dtype) of the Parquet artifacts read across stages.

The full documentation of every artifact is ``docs/artifacts.md``; readers pass these
dicts to :func:`langtail.io.read_parquet`, which fails with a clear message on a mismatch.
"""
from langtail.data.manifest import MANIFEST_COLUMNS  # noqa: F401

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
