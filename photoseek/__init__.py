"""photoseek: search your photo folders by what is in them.

The public faces are the top-level modules of the repository: `image_search` (ImageSearchEngine),
`clip_encoder` (CLIPEncoder) and `milvus_store` (MilvusStore); `photoseek` on the command line (or
`python -m photoseek`). Inside, one sub-package per part; dependencies point one way (cli, servers ->
engine -> encoders, store; nothing here imports a face):

    engine/     ImageSearchEngine (the facade), ranking by words, duplicates
    encoders/   CLIPEncoder and its backends: open_clip on ONNX Runtime or torch, Chinese-CLIP, the service
                client and its wire protocol, the multilingual query encoders
    store/      MilvusStore: schema, records, filters, words, Milvus Lite, the in-memory vector copy
    indexing/   finding and decoding files safely, the incremental pipeline, watching, Ray
    servers/    the HTTP API and page, index jobs, thumbnails, the encoder server, the CLI's channel to a server
    cli.py      the command line
"""

__version__ = "0.3.0"
