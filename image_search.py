"""photoseek: text-to-image search over your photo folders with CLIP and Milvus.

Python:
    from image_search import ImageSearchEngine, print_results
    with ImageSearchEngine(model_name="ViT-B-32::openai", collection_name="my_images") as engine:
        engine.index_directory("/path/to/images")
        print_results(engine.search("a cute cat", top_k=5))

Command line (also `photoseek ...` once installed, or `python -m photoseek ...`):
    python image_search.py --mode index --image-dir DIR
    python image_search.py --mode search --query "a cute cat" --top-k 5

This file is the engine's public face; the implementation lives in the photoseek package
(photoseek/engine/engine.py, and a sub-package per part).
"""

from photoseek.cli import main
from photoseek.engine.engine import ImageSearchEngine
from photoseek.indexing.pipeline import IndexSummary
from photoseek.query import QueryTerm
from photoseek.results import SearchResult, print_results
from photoseek.store.filters import Near, SearchFilter

__all__ = ["ImageSearchEngine", "SearchResult", "SearchFilter", "Near", "IndexSummary", "QueryTerm", "print_results", "main"]

if __name__ == "__main__":
    from photoseek.cli import console_main

    console_main()
