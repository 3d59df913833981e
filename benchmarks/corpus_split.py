"""Corpus text throughput: sentences/s of clean + split (and of the CLIP-token filter).

Input: the two real full-article extracts in ``shared/data/text/mediawiki_responses``
(``Area`` from pymediawiki_2017, ``Python (programming language)`` from
wikipedia_api_vcr) replicated until about ``--mb`` MiB of text (default 5), as if each
copy were a separate class page. Without ``shared/``, a generated encyclopedia-style
page is replicated instead (said in the result). Measured per run:

* ``clean_split``: :func:`langtail.corpus.clean.clean_extract` (default drop_sections)
  + :func:`langtail.corpus.sentences.split_sentences` over all pages;
* ``token_filter``: :func:`langtail.corpus.sentences.fit_sentence` (CLIP BPE counting,
  long-sentence splitting) over the sentences of ``--filter-pages`` pages (the BPE
  cache is warm after the first page, as in a real corpus build).

The figure is the median over ``--repeats`` runs, after one warm-up page. Usage::

    python benchmarks/corpus_split.py --mb 5 --repeats 3 --out benchmarks/results/corpus_split.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from langtail.config import CorpusConfig
from langtail.corpus.clean import clean_extract
from langtail.corpus.language import drop_sections_for
from langtail.corpus.sentences import fit_sentence, split_sentences
from langtail.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT.parent / "shared" / "data" / "text" / "mediawiki_responses"


def _pages() -> tuple[list[str], str]:
    area = RECORDED / "pymediawiki_2017" / "en_extracts_full_Area.json"
    py = RECORDED / "wikipedia_api_vcr" / "TestVcrWikiExtracts.test_extracts_0.json"
    if area.exists() and py.exists():
        out = []
        for f in (area, py):
            out.append(next(iter(json.loads(f.read_text())["query"]["pages"].values()))["extract"])
        return out, "real extracts: Area (pymediawiki_2017) + Python (programming language) (wikipedia_api_vcr)"
    para = ("The demo figure is a flat shape, e.g. a circle of approx. 3.5 cm. Dr. Smith of St. Louis "
            "described it in 1931. It is red, i.e. the colour of a ripe tomato. ")
    page = para * 3 + "\n\n== History ==\n" + para * 5 + "\n\n== References ==\nA. Author (1931). A book.\n"
    return [page], "generated page (shared/ not found)"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=5.0, help="MiB of page text to process per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--filter-pages", type=int, default=20, help="pages whose sentences go through the token filter")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "corpus_split.json"))
    args = ap.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])])
    print("command:", command, flush=True)

    base, origin = _pages()
    target = int(args.mb * 1024 * 1024)
    pages: list[str] = []
    size = 0
    while size < target:
        for p in base:
            pages.append(p)
            size += len(p.encode("utf-8"))
    drop = drop_sections_for(CorpusConfig().drop_sections, CorpusConfig().language)
    # warm-up (imports, regex compilation, Punkt, BPE vocabulary)
    warm = [s for b in clean_extract(base[0], drop) for s in split_sentences(b.text)]
    for s in warm[:20]:
        fit_sentence(s, 3, 77)

    split_rates, filter_rates, n_sent = [], [], 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        sents: list[str] = []
        for p in pages:
            for b in clean_extract(p, drop):
                sents.extend(split_sentences(b.text))
        dt = time.perf_counter() - t0
        n_sent = len(sents)
        split_rates.append(n_sent / dt)
        sub = []
        for p in pages[: args.filter_pages]:
            for b in clean_extract(p, drop):
                sub.extend(split_sentences(b.text))
        t0 = time.perf_counter()
        n_out = 0
        for s in sub:
            n_out += len(fit_sentence(s, 3, 77))
        filter_rates.append(len(sub) / (time.perf_counter() - t0))
        print(f"run: clean+split {split_rates[-1]:,.0f} sentences/s ({n_sent} sentences, {dt:.2f} s); "
              f"token filter {filter_rates[-1]:,.0f} sentences/s", flush=True)

    import nltk

    result = {
        "benchmark": "corpus_split",
        "command": command,
        "input": origin,
        "n_pages": len(pages),
        "mib": round(size / 1024 / 1024, 3),
        "n_sentences": n_sent,
        "clean_split_sentences_per_s": round(statistics.median(split_rates), 1),
        "clean_split_runs": [round(r, 1) for r in split_rates],
        "clean_split_mib_per_s": round(size / 1024 / 1024 / (n_sent / statistics.median(split_rates)), 3),
        "token_filter_sentences_per_s": round(statistics.median(filter_rates), 1),
        "token_filter_runs": [round(r, 1) for r in filter_rates],
        "token_filter_sentences": len(sub),
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "nltk": nltk.__version__,
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("clean_split_sentences_per_s", "token_filter_sentences_per_s",
                                             "n_sentences", "mib")}), flush=True)
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
