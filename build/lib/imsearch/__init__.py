"""image_search's internals, one sub-package per part; the public faces are the top-level modules
`image_search` (ImageSearchEngine), `clip_encoder` (CLIPEncoder) and `milvus_store` (MilvusStore).

    encoders/   the backends behind CLIPEncoder: open_clip, Chinese-CLIP, the service client and its
                wire protocol, the multilingual query encoders
    indexing/   decoding files safely and the incremental indexing pipeline
    store/      what MilvusStore keeps beside Milvus (the in-memory vector copy)
    servers/    the HTTP API and page, index jobs, thumbnails, the encoder server, the remote engine
    cli.py      the command line: one handler per mode
"""
