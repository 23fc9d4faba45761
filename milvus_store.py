"""photoseek's store face: `MilvusStore` keeps photos' vectors and words in one Milvus collection, on Milvus Lite
(a local `.db`, the default) or a Milvus server or cluster (`http://host:19530`).

    from milvus_store import MilvusStore
    store = MilvusStore("~/photos.db", collection_name="my_images")

The implementation lives in photoseek/store/: milvus.py (the store), schema.py (collection layout and record),
records.py (rows), filters.py (search filters and geometry), words.py (what a photo is found by), lite.py
(Milvus Lite's file and lock).
"""

from photoseek.store.filters import Near, SearchFilter, photo_filter
from photoseek.store.lite import default_lite_path, is_lite_uri, resolve_uri
from photoseek.store.milvus import MilvusStore, StoreAddress
from photoseek.store.records import Hit, ImageRecord, IndexedFile, metadata_from_row, path_id
from photoseek.store.schema import DEFAULT_COLLECTION, SCHEMA_VERSION, CollectionInfo

__all__ = ["MilvusStore", "StoreAddress", "SearchFilter", "Near", "photo_filter", "ImageRecord", "IndexedFile", "Hit",
           "CollectionInfo", "metadata_from_row", "path_id", "resolve_uri", "is_lite_uri", "default_lite_path",
           "DEFAULT_COLLECTION", "SCHEMA_VERSION"]
