"""Plant known bugs, one at a time, in a scratch copy of the project and run the tests aimed at each:
every bug must be caught. The bugs are the ones a user would notice (issue #16's list and later ones).

    python bench/planted_bugs.py            # all of them (~25 minutes on 2 cores)
    python bench/planted_bugs.py -k vector  # those whose name contains "vector"
    python bench/planted_bugs.py --check    # only that every bug still plants and its tests exist (1 s)

Prints one line per bug (caught / MISSED, the test that caught it) and exits 1 if any was missed.
The copy is made from the tracked files; the scratch copy's modules come first on PYTHONPATH, so the
installed (editable) package is not what the tests import.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bug:
    name: str
    file: str
    old: str  # replaced by `new`; several edits: old and new as tuples of the same length
    new: str | tuple[str, ...]
    tests: tuple[str, ...]

    def edits(self) -> list[tuple[str, str]]:
        if isinstance(self.new, tuple):
            return list(zip(self.old.split("\x00"), self.new, strict=True))
        return [(self.old, self.new)]


BUGS = [
    Bug("vector cache compacts ids into floats", "imsearch/store/vector_cache.py",
        "ids = np.zeros(capacity, dtype=np.int64)", "ids = np.zeros(capacity)",
        ("tests/test_vector_cache.py::test_real_ids_survive_compaction_and_unknown_deletes_are_no_ops",)),
    Bug("vector cache fails deleting an id it never held", "imsearch/store/vector_cache.py",
        "self._row_of.pop(int(image_id), None)", "self._row_of.pop(int(image_id))",
        ("tests/test_vector_cache.py::test_real_ids_survive_compaction_and_unknown_deletes_are_no_ops",)),
    Bug("composed query ignores weights", "image_search.py",
        "parts.append(term.weight * vector)", "parts.append(vector if term.weight > 0 else -vector)",
        ("tests/test_composed.py::test_the_weighted_sum_is_searched_exactly",)),
    Bug("composed query sums unnormalised stored vectors", "image_search.py",
        'vector = normalize(np.asarray(row["vector"], dtype=np.float32)[None])[0]',
        'vector = 3.0 * np.asarray(row["vector"], dtype=np.float32)',
        ("tests/test_composed.py::test_the_weighted_sum_is_searched_exactly",)),
    Bug("HTTP composed query accepts file paths", "imsearch/servers/http_api.py",
        "terms = compose(q, add or [], subtract or [], allow_paths=False)", "terms = compose(q, add or [], subtract or [])",
        ("tests/test_composed.py::test_cli_and_http_compose_the_same_query",)),
    Bug("ONNX text tower fed open_clip-unequal tokens (no cleaning)", "imsearch/encoders/clip_tokenizer.py",
        'return lambda text: _whitespace_clean(_basic_clean(text)).lower()', 'return lambda text: text.lower()',
        ("tests/test_onnx_runtime.py::test_tokenizer_matches_open_clip_token_for_token",)),
    Bug("numpy transform crops off-centre", "imsearch/encoders/preprocess.py",
        "top = int(round((height - crop_height) / 2.0))", "top = 0",
        ("tests/test_onnx_runtime.py::test_transform_matches_open_clip_on_photos_and_odd_sizes",)),
    Bug("ONNX export of a tag not keyed by the Hugging Face cache", "imsearch/encoders/onnx_backend.py",
        'weights = [os.environ.get("HF_HUB_CACHE") or os.path.join(',
        'weights = [] if True else [os.environ.get("HF_HUB_CACHE") or os.path.join(',
        ("tests/test_onnx_runtime.py::test_exports_of_a_pretrained_tag_follow_the_weights_open_clip_would_load",)),
    Bug("ONNX export kept after its weights file changed", "imsearch/encoders/onnx_backend.py",
        "        if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):", "        if False:",
        ("tests/test_onnx_runtime.py::test_exports_of_a_pretrained_tag_follow_the_weights_open_clip_would_load",)),
    Bug("unchanged = same size (mtime ignored)", "imsearch/indexing/pipeline.py",
        "known.size == entry.size and abs(known.mtime - entry.mtime) < 1e-6", "known.size == entry.size",
        ("tests/test_engine.py::test_a_file_rewritten_to_the_same_size_is_re_encoded_by_its_mtime",)),
    Bug("unchanged = same mtime (size ignored)", "imsearch/indexing/pipeline.py",
        "known.size == entry.size and abs(known.mtime - entry.mtime) < 1e-6", "abs(known.mtime - entry.mtime) < 1e-6",
        ("tests/test_engine.py::test_a_file_rewritten_to_the_same_size_is_re_encoded_by_its_mtime",)),
    Bug("search capped at 20 results", "image_search.py",
        "return [_to_results(h, encoder) for h, encoder in zip(hits, answered_by, strict=True)]",
        "return [_to_results(h[:20], encoder) for h, encoder in zip(hits, answered_by, strict=True)]",
        ("tests/test_engine.py::test_reindex_skips_unchanged_reencodes_changed_removes_deleted",)),
    Bug("images shrunk to 12 px before the model", "clip_encoder.py",  # every backend's images go through here
        "        return self.backend.prepare_image(image)", "        return self.backend.prepare_image(image.resize((12, 12)))",
        ("tests/test_engine.py::test_test_model_retrieves_held_out_scenes",)),
    Bug("in-memory search answers worst first", "imsearch/store/vector_cache.py",
        "top = top[np.argsort(-row_scores[top], kind=\"stable\")]", "top = top[np.argsort(row_scores[top], kind=\"stable\")]",
        ("tests/test_http_api.py::test_text_search_ranks_the_described_scene_first", "tests/test_vector_cache.py")),
    Bug("folder filter /a/sub also matches /a/sub2", "imsearch/servers/request_filters.py",
        'prefix = (folder.rstrip("/") + "/")', 'prefix = (folder.rstrip("/"))',
        ("tests/test_http_api.py::test_filters_folder_type_and_dates",)),
    Bug("image route checks the size only (no mtime, no fingerprint)", "imsearch/servers/files.py",
        ' or abs(info.st_mtime - float(record["mtime"])) > 1e-6\x00if fingerprint and hashlib', ("", "if False and hashlib"),
        ("tests/test_http_api.py::test_a_file_changed_since_indexing_is_not_served",)),
    Bug("image route checks the mtime only (no size, no fingerprint)", "imsearch/servers/files.py",
        'if info.st_size != int(record["size"]) or abs(\x00if len(data) != int(record["size"]):\x00if fingerprint and hashlib',
        ("if abs(", "if False:", "if False and hashlib"),
        ("tests/test_http_api.py::test_a_file_changed_since_indexing_is_not_served",)),
    Bug("index root checked with abspath, not realpath", "imsearch/servers/http_api.py",
        "if roots and not under(os.path.realpath(folder), roots):", "if roots and not under(folder, roots):",
        ("tests/test_http_api.py::test_index_refuses_bad_and_disallowed_folders",)),
    Bug("image vectors not L2-normalised", "clip_encoder.py",
        "return self._batched(prepared, self.backend.embed_images)",
        "return np.concatenate([self.backend.embed_images(prepared[i:i + self.batch_size]) for i in range(0, len(prepared), self.batch_size)])",
        ("tests/test_models.py::test_encoding_is_deterministic_and_batch_independent",
         "tests/test_image_loading.py::test_draft_decoding_matches_reference_embedding")),
    Bug("vector cache: ids not grown past 1,024 rows", "imsearch/store/vector_cache.py",
        "            self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])\n", "",
        ("tests/test_vector_cache.py",)),
    Bug("vector cache: compaction keeps stale fields", "imsearch/store/vector_cache.py",
        "        self._fields = [self._fields[i] for i in keep]\n", "",
        ("tests/test_vector_cache.py",)),
    Bug("Chinese-CLIP: red and blue swapped", "imsearch/encoders/cn_clip.py",
        "self._set_model(model.float().to(device), image_transform(arch.image_size), device, precision)",
        "self._set_model(model.float().to(device), lambda im: image_transform(arch.image_size)(__import__('PIL.Image').Image.merge('RGB', im.split()[::-1])), device, precision)",
        ("tests/test_multilingual.py::test_chinese_clip_loads_offline_and_searches",)),
    Bug("Chinese-CLIP: centre crop instead of its square resize", "imsearch/encoders/cn_clip.py",
        "self._set_model(model.float().to(device), image_transform(arch.image_size), device, precision)",
        "self._set_model(model.float().to(device), lambda im: image_transform(arch.image_size)(__import__('PIL.ImageOps').ImageOps.fit(im, (min(im.size),) * 2)), device, precision)",
        ("tests/test_multilingual.py::test_chinese_clip_loads_offline_and_searches",)),
    Bug("service mode mirrors large photos", "imsearch/encoders/service.py",
        "            image.save(buffer, format=\"JPEG\", quality=95)",
        "            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)\n            image.save(buffer, format=\"JPEG\", quality=95)",
        ("tests/test_service.py::test_large_non_square_photos_give_local_modes_vectors",)),
    Bug("service mode swaps colours of large photos", "imsearch/encoders/service.py",
        "            image.save(buffer, format=\"JPEG\", quality=95)",
        "            image = Image.merge('RGB', image.split()[::-1])\n            image.save(buffer, format=\"JPEG\", quality=95)",
        ("tests/test_service.py::test_large_non_square_photos_give_local_modes_vectors",)),
    Bug("several --image-dir: earlier failures dropped", "imsearch/indexing/pipeline.py",
        "self.failed.extend(other.failed)", "self.failed = list(other.failed)",
        ("tests/test_cli.py::test_several_folders_report_every_failure_and_a_run_that_indexed_nothing_fails",)),
    Bug("a run where every file failed exits 0", "imsearch/cli.py",
        "return 1 if total.failed and files == 0 else 0", "return 0",
        ("tests/test_cli.py::test_several_folders_report_every_failure_and_a_run_that_indexed_nothing_fails",)),
    Bug("stats load the model", "image_search.py",
        '"dim": info.dim if info else (self._encoder.dim if self._encoder is not None else None),',
        '"dim": info.dim if info else self.encoder.dim,',
        ("tests/test_engine.py::test_stats_and_search_of_a_missing_collection_load_no_model",)),
    Bug("OpenAI tags built with GELU (the seed's bug)", "imsearch/encoders/open_clip_backend.py",
        'quick_gelu=bool(tag_config.get("quick_gelu", False))', "quick_gelu=None",
        ("tests/test_model_fidelity.py::test_vectors_equal_open_clips_reference_forward_of_the_trained_architecture",)),
    Bug("a pre-fix index searched with QuickGELU (mixing vectors)", "image_search.py",
        'self._encoder_options["activation"] = built', "pass",
        ("tests/test_model_fidelity.py::test_an_index_built_with_the_wrong_activation_is_flagged_and_kept_consistent",)),
    Bug("image route follows a swapped symlink (size and mtime checked only)", "imsearch/servers/files.py",
        "descriptor = open_without_symlinks(real)\x00if fingerprint and hashlib", ("descriptor = os.open(path, os.O_RDONLY)", "if False and hashlib"),
        ("tests/test_security.py::test_a_file_swapped_for_a_symlink_with_its_size_and_mtime_is_not_served",
         "tests/test_security.py::test_a_folder_swapped_for_a_symlink_is_not_followed")),
    Bug("a folder link out of the root is indexed", "imsearch/indexing/scan.py",
        "if within and not _inside(os.path.realpath(folder), within):", "if False:",
        ("tests/test_security.py::test_indexing_and_serving_stay_inside_the_roots_real_path",)),
    Bug("a file link out of the root is indexed", "imsearch/indexing/scan.py",
        "if within and entry.is_symlink() and not _inside(os.path.realpath(entry.path), within):", "if False:",
        ("tests/test_security.py::test_indexing_and_serving_stay_inside_the_roots_real_path",)),
    Bug("images served from outside the roots", "imsearch/servers/http_api.py",
        "return read_indexed_file(record, serve_roots), record", "return read_indexed_file(record, []), record",
        ("tests/test_security.py::test_indexing_and_serving_stay_inside_the_roots_real_path",)),
    Bug("/api/index tells missing from forbidden outside the roots", "imsearch/servers/http_api.py",
        "if roots and not under(os.path.realpath(folder), roots):",
        "if roots and os.path.isdir(folder) and not under(os.path.realpath(folder), roots):",
        ("tests/test_security.py::test_index_requests_outside_the_roots_learn_nothing",)),
    Bug("any Host header answered (DNS rebinding)", "imsearch/servers/http_api.py",
        "if named not in hosts:", "if False:",
        ("tests/test_security.py::test_host_and_origin_are_checked",)),
    Bug("another site's Origin answered", "imsearch/servers/http_api.py",
        "if origin is not None and host_name(urlsplit(origin).netloc) not in hosts:", "if False:",
        ("tests/test_security.py::test_host_and_origin_are_checked",)),
    Bug("a cancelled job keeps running", "imsearch/servers/jobs.py",
        'raise IndexCancelled(f"index job {job.id} was cancelled")', "pass",
        ("tests/test_security.py::test_jobs_are_listed_and_cancelled",)),
    Bug("serving beyond loopback without a token", "imsearch/cli.py",
        'if args.mode == "serve" and not loopback and not args.token and not args.insecure_no_token:', "if False:",
        ("tests/test_security.py::test_serving_beyond_loopback_without_a_token_is_refused",)),
    Bug("approximate search (AUTOINDEX: HNSW on a server)", "milvus_store.py",
        'VECTOR_INDEX = "FLAT"', 'VECTOR_INDEX = "AUTOINDEX"',
        ("tests/test_store.py::test_search_is_exact_at_any_k_with_and_without_filters",)),
    Bug("old approximate indexes kept", "milvus_store.py",
        'if index_type.upper() == VECTOR_INDEX:', "if True:",
        ("tests/test_store.py::test_a_collection_with_an_approximate_index_is_moved_to_exact_search",)),
    Bug("uploads decoded on the event loop", "imsearch/servers/http_api.py",
        "results = await run_in_threadpool(engine.search_by_image, bytes(data), top_k, search_filter)",
        "results = engine.search_by_image(bytes(data), top_k, search_filter)",
        ("tests/test_security.py::test_decoding_uploads_does_not_stall_the_server",)),
    Bug("request bodies read before the size check", "imsearch/servers/http_api.py",
        "    app.add_middleware(BodyLimit,", "    (lambda *_, **__: None)(BodyLimit,",
        ("tests/test_security.py::test_bodies_are_bounded_before_they_are_read",)),
    Bug("non-finite dates accepted", "imsearch/servers/request_filters.py",
        "if not math.isfinite(number) or abs(number) > 1e11:", "if False:",
        ("tests/test_security.py::test_non_finite_numbers_are_a_400_without_internals",)),
    Bug("validation errors in FastAPI's own shape", "imsearch/servers/http_api.py",
        "@app.exception_handler(RequestValidationError)", "@app.exception_handler(KeyError)",
        ("tests/test_security.py::test_every_error_has_one_shape",)),
    Bug("the Bearer scheme name case-sensitive", "imsearch/servers/http_api.py",
        'if scheme.lower() == "bearer"', 'if scheme == "Bearer"',
        ("tests/test_security.py::test_the_bearer_scheme_name_is_case_insensitive",)),
    Bug("one bad document ends a gRPC stream (no tensor checks, narrow except)", "imsearch/servers/encoder_server.py",
        "except Exception as error:  # one bad document fails its own request, never the stream\x00"
        "    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):\x00"
        "            except (TypeError, ValueError) as error:  # an unknown dtype",
        ("except (ImageSearchError, ValueError) as error:  #", "    if False:", "            except KeyError as error:  #"),
        ("tests/test_service.py::test_one_bad_document_in_a_grpc_stream_fails_alone",)),
    Bug("gRPC messages of any size accepted", "imsearch/servers/encoder_server.py",
        '("grpc.max_receive_message_length", limits.max_request_bytes)', '("grpc.max_receive_message_length", -1)',
        ("tests/test_service.py::test_the_encoder_server_caps_requests",)),
    Bug("work for cancelled gRPC requests still computed", "imsearch/servers/encoder_server.py",
        "context.add_callback(self._on_end)", "context.add_callback(lambda: None)",
        ("tests/test_service.py::test_work_for_requests_that_went_away_is_dropped",
         "tests/test_service.py::test_work_queued_after_the_client_left_is_dropped")),
    Bug("work queued after the gRPC client left still computed", "imsearch/servers/encoder_server.py",
        "            gone = self.client_gone\n", "            gone = False\n",
        ("tests/test_service.py::test_work_queued_after_the_client_left_is_dropped",)),
    Bug("a gRPC stream holds every answered request's vectors until it ends", "imsearch/servers/encoder_server.py",
        "future.add_done_callback(self._forget)", "pass",
        ("tests/test_service.py::test_a_long_grpc_stream_keeps_no_finished_work",)),
    Bug("a gRPC handler started after its client left still queues its work", "imsearch/servers/encoder_server.py",
        "if not context.add_callback(self._on_end):", "if not context.add_callback(self._on_end) and False:",
        ("tests/test_service.py::test_work_queued_after_the_client_left_is_dropped[single-starting]",)),
    Bug("work for an HTTP client that disconnected still computed", "imsearch/servers/encoder_server.py",
        "client_left = asyncio.ensure_future(_disconnect(request))", "client_left = asyncio.ensure_future(asyncio.sleep(3600))",
        ("tests/test_service.py::test_work_for_an_http_client_that_disconnected_is_dropped",)),
    Bug("malformed JSON on /post is a 500", "imsearch/servers/encoder_server.py",
        'docs = body.get("data") if isinstance(body, dict) else None', 'docs = body.get("data")',
        ("tests/test_service.py::test_malformed_http_requests_are_client_errors",)),
    Bug("SIGTERM leaves the server's advert behind", "imsearch/servers/listening.py",
        "        signal.signal(signal.SIGTERM, _exit_on_sigterm)", "        pass",
        ("tests/test_security.py::test_sigterm_removes_the_servers_advert",)),
    Bug("headers that never finish keep a connection", "imsearch/servers/listening.py",
        "                    self.transport.close()", "                    pass",
        ("tests/test_security.py::test_headers_that_never_finish_time_out",)),
    Bug("--rebuild drops a collection image_search did not make", "image_search.py",
        "            if rebuild and not drop_foreign_collection:", "            if False:",
        ("tests/test_security.py::test_rebuild_refuses_to_drop_a_collection_image_search_did_not_make",)),
    Bug("Lite's AllocTimestamp traceback on stderr", "milvus_store.py",
        "            _silence_lite_alloc_timestamp()", "            pass",
        ("tests/test_security.py::test_the_python_api_writes_no_traceback_on_stderr",)),
    Bug("the encoder's /post decodes images on the event loop", "imsearch/servers/encoder_server.py",
        "prepared = await run_in_threadpool(prepared_image, doc)", "prepared = prepared_image(doc)",
        ("tests/test_service.py::test_a_text_request_does_not_wait_behind_images_being_decoded",)),
    Bug("a NAS's @eaDir thumbnails indexed as photos", "imsearch/indexing/scan.py",
        "if entry.name not in EXCLUDED_FOLDERS:", "if True:",
        ("tests/test_scan.py", "tests/test_engine.py::test_excluded_files_are_left_out_and_leave_the_index")),
    Bug("--exclude ignored", "imsearch/indexing/scan.py",
        "if exclude and _excluded(entry.name, os.path.relpath(", "if False and _excluded(entry.name, os.path.relpath(",
        ("tests/test_scan.py", "tests/test_engine.py::test_excluded_files_are_left_out_and_leave_the_index")),
    Bug("pseudo filesystems walked", "imsearch/indexing/scan.py",
        "        if info.st_dev in pseudo:", "        if False:",
        ("tests/test_security.py::test_pseudo_filesystems_are_never_walked",)),
    Bug("thumbnails re-read and re-hash the original every time", "imsearch/servers/http_api.py",
        "if not (cached.exists() and unchanged_on_disk(record)", "if not (False and unchanged_on_disk(record)",
        ("tests/test_http_api.py::test_a_cached_thumbnail_is_answered_without_reading_the_original_again",)),
    Bug("the web page left out of the wheel", "pyproject.toml",
        '"servers/web/*", ', "",
        ("tests/test_packaging.py::test_the_installed_command_indexes_searches_and_serves_its_page",)),
    Bug("position filter is only the box (no distance)", "milvus_store.py",
        "return latitude != UNKNOWN_COORDINATE and distance_km(self.latitude, self.longitude, latitude, longitude) <= self.km",
        "return latitude != UNKNOWN_COORDINATE",
        ("tests/test_metadata.py::test_filters_select_exactly_the_photos_whose_headers_match",)),
    Bug("position filter never widens (fewer than k inside the circle)", "milvus_store.py",
        "            limit = min(MAX_SEARCH_LIMIT, limit * 4)", "            return inside",
        ("tests/test_store.py::test_a_circle_filter_widens_until_the_k_best_inside_are_found",)),
    Bug("camera filter matches single words only", "milvus_store.py",
        '    phrases = [" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)]',
        "    phrases = list(words)", ("tests/test_metadata.py::test_filters_select_exactly_the_photos_whose_headers_match",)),
    Bug("size as stored, not as displayed (orientation ignored)", "imsearch/indexing/metadata.py",
        "    if orientation in _QUARTER_TURNS:\n        width, height = height, width", "    pass",
        ("tests/test_metadata.py::test_headers_are_read_as_a_person_reads_them",)),
    Bug("taken-before a date leaves that day out", "imsearch/photo_metadata.py",
        "        taken += 86_400", "        pass", ("tests/test_metadata.py::test_filters_select_exactly_the_photos_whose_headers_match",)),
    Bug("old rows never get their headers read", "imsearch/indexing/pipeline.py",
        "            if known.needs_metadata:", "            if False:",
        ("tests/test_metadata.py::test_a_collection_indexed_before_metadata_gains_it_without_re_encoding",)),
    Bug("a version 1 collection is never upgraded", "milvus_store.py",
        "        if create and info.schema_version < SCHEMA_VERSION:", "        if False:",
        ("tests/test_metadata.py::test_a_collection_indexed_before_metadata_gains_it_without_re_encoding",)),
    Bug("an upgrade cut short loses the collection", "milvus_store.py",
        '            self._call("rename_collection", self.collection_name + UPGRADE_SUFFIX, self.collection_name)', "            return None",
        ("tests/test_metadata.py::test_a_collection_indexed_before_metadata_gains_it_without_re_encoding",)),
    Bug("GPS 0,0 (no fix) taken as a position", "imsearch/indexing/metadata.py",
        "    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):",
        "    if latitude is None or longitude is None:", ("tests/test_metadata.py::test_headers_are_read_as_a_person_reads_them",)),
    Bug("west longitudes read as east", "imsearch/indexing/metadata.py",
        '    if (_text(reference) or "").upper()[:1] in ("S", "W"):', '    if (_text(reference) or "").upper()[:1] in ("S",):',
        ("tests/test_metadata.py::test_headers_are_read_as_a_person_reads_them",)),
    Bug("words never matched (CLIP alone)", "image_search.py",
        '        if self.text_match != "off" and info.text_match:', "        if False:",
        ("tests/test_text_match.py::test_a_word_only_one_photo_has_ranks_it_first",)),
    Bug("folder names left out of the words", "milvus_store.py",
        '    words = " ".join([str(row.get("description", "")), *path.parent.parts[-2:], path.stem])',
        '    words = " ".join([str(row.get("description", "")), path.stem])',
        ("tests/test_text_match.py::test_a_word_only_one_photo_has_ranks_it_first",)),
    Bug("Chinese stored as one word", "milvus_store.py",
        "    return _CJK.sub(spread, ", "    return (",
        ("tests/test_text_match.py::test_words_are_written_for_the_analyzer",)),
    Bug("a move watched as two unrelated folders", "imsearch/indexing/watch.py",
        "            folders = [os.path.commonpath(folders)]", "            pass",
        ("tests/test_watch.py::test_changes_name_the_folders_to_bring_up_to_date",)),
    Bug("a folder that comes back is not brought up to date", "imsearch/indexing/watch.py",
        "                    self._run_apply([root])  # what changed while it was away", "                    pass",
        ("tests/test_watch.py::test_a_vanished_folder_is_left_alone_and_taken_up_again",)),
    Bug("a failed watched run is dropped", "imsearch/indexing/watch.py",
        "                self._pending.update(folders)\n                self._last_event = time.monotonic()\n            return",
        "                pass\n            return", ("tests/test_watch.py::test_a_failed_run_is_tried_again",)),
    Bug("mirrored copies not recognised", "imsearch/indexing/perceptual.py",
        "_MIRROR = np.where(np.arange(_LOW) % 2 == 1, -1.0, 1.0)[None, :]", "_MIRROR = np.ones((1, _LOW))",
        ("tests/test_duplicates.py::test_the_hash_tells_copies_from_different_photographs",)),
    Bug("duplicates decided by vectors alone", "imsearch/store/duplicates.py",
        "                    if hash_distance(mine[0], mine[1], theirs[0]) <= max_hash_distance:", "                    if True:",
        ("tests/test_duplicates.py::test_copies_group_with_their_original_best_first",)),
    Bug("a copy kept instead of the original", "imsearch/store/duplicates.py",
        "        return -pixels, when, len(row[\"path\"]), row[\"path\"]", "        return pixels, -when, len(row[\"path\"]), row[\"path\"]",
        ("tests/test_duplicates.py::test_copies_group_with_their_original_best_first",)),
    Bug("a RAW beside its JPEG indexed twice", "imsearch/indexing/scan.py",
        "    return [f for f in files if not (is_raw(f.path) and os.path.splitext(f.path)[0].lower() in developed)]",
        "    return files", ("tests/test_raw.py::test_a_raw_beside_its_jpeg_is_listed_once",)),
    Bug("RAW files handed to Pillow", "imsearch/indexing/decode.py",
        "        raw = raw or is_raw(source)", "        pass", ("tests/test_image_loading.py::test_a_raw_with_a_jpeg_preview_gives_the_preview_and_the_sensor_size",
         "tests/test_engine.py::test_a_camera_raw_file_is_indexed_as_the_photograph_it_holds")),
    # issue #16, second pass: bugs that the mutation run showed no test would catch, each with its new test
    Bug("dup: copies compared by their mirror hash alone", "imsearch/store/duplicates.py",
        "hash_distance(mine[0], mine[1], theirs[0])", "hash_distance(mine[1], mine[1], theirs[0])", ("tests/test_duplicates.py::test_groups_are_exact_on_rows_of_known_hashes",)),
    Bug("dup: a search batch with no hashes ends the scan", "imsearch/store/duplicates.py",
        "                continue\n            vectors", "                break\n            vectors", ("tests/test_duplicates.py::test_groups_are_exact_on_rows_of_known_hashes",)),
    Bug("dup: the distance limit itself left out", "imsearch/store/duplicates.py",
        "<= max_hash_distance", "< max_hash_distance", ("tests/test_duplicates.py::test_groups_are_exact_on_rows_of_known_hashes",)),
    Bug("dup: date taken ignored in the best copy", "imsearch/store/duplicates.py",
        "when = metadata.taken if metadata and metadata.taken is not None else",
        "when = metadata.taken if (metadata and metadata.taken is not None) and False else", ("tests/test_duplicates.py::test_groups_are_exact_on_rows_of_known_hashes",)),
    Bug("dup: the circle filter ignored when reading rows", "milvus_store.py",
        "near = search_filter.near if search_filter else None\n        for page", "near = None\n        for page", ("tests/test_duplicates.py::test_groups_are_exact_on_rows_of_known_hashes",)),
    Bug("near: box ends before the rim", "milvus_store.py",
        "dlat = self.km / 111.19 * 1.001", "dlat = self.km / 111.19 / 1.001",
        ("tests/test_metadata.py::test_the_box_reaches_the_rim_and_no_further",)),
    Bug("near: box of every longitude west of the circle", "milvus_store.py", "if west < -180:", "if west < +180:",
        ("tests/test_metadata.py::test_the_box_reaches_the_rim_and_no_further",)),
    Bug("plan: a file with the same size counted unchanged", "imsearch/indexing/pipeline.py",
        "known.size == entry.size and abs(known.mtime - entry.mtime) < 1e-6", "known.size == entry.size",
        ("tests/test_scan.py::test_a_file_is_unchanged_only_when_size_and_mtime_both_match",)),
    Bug("upgrade: the model's build dropped", "milvus_store.py",
        "created = self._create(info.model, info.dim, info.build, name=target)", "created = self._create(info.model, info.dim, None, name=target)",
        ("tests/test_metadata.py::test_a_collection_indexed_before_metadata_gains_it_without_re_encoding[lite]",)),
    Bug("store: pymilvus's wrapper shown instead of Milvus's words", "milvus_store.py",
        'message = getattr(error, "message", None) or str(error)', 'message = getattr(error, "message", None) and str(error)',
        ("tests/test_store.py::test_a_failing_milvus_call_names_the_operation_and_the_database",)),
    Bug("store: folder slices skip the next subfolder range", "milvus_store.py",
        "bounds = [prefix, *skipped[per_query::per_query], end]", "bounds = [prefix, *skipped[per_query + 1::per_query], end]",
        ("tests/test_store.py::test_the_folder_query_of_a_server_is_exact_in_slices",)),
    Bug("service: a gRPC answer missing a document accepted", "imsearch/encoders/service.py",
        "        if any(row is None for row in rows):", "        if False:",
        ("tests/test_service.py::test_a_grpc_answer_missing_a_document_is_refused",)),
    Bug("engine: index_images with one path", "image_search.py",
        "            image_paths = [image_paths]", "            image_paths = list(image_paths)",
        ("tests/test_engine.py::test_index_images_reports_missing_paths",)),
    # found by the mutation run of 2026-12-01 (each shown failing then)
    Bug("in-memory top-k partitioned one short (wrong top 1)", "imsearch/store/vector_cache.py",
        "np.argpartition(-row_scores, k - 1)", "np.argpartition(-row_scores, k - 2)", ("tests/test_vector_cache.py",)),
    Bug("in-memory copy normalises only vectors longer than 1", "imsearch/store/vector_cache.py",
        "if norm > 0 else", "if norm > 1 else", ("tests/test_vector_cache.py",)),
    Bug("in-memory copy returns the stored words with each hit", "imsearch/store/vector_cache.py",
        '"fingerprint", "text")', '"fingerprint")', ("tests/test_vector_cache.py",)),
    Bug("in-memory copy stops at an empty answer", "imsearch/store/vector_cache.py",
        "                    continue", "                    break", ("tests/test_vector_cache.py",)),
    Bug("in-memory copy refuses float64 queries", "imsearch/store/vector_cache.py",
        "np.ascontiguousarray(queries, dtype=np.float32)", "np.ascontiguousarray(queries)",
        ("tests/test_store.py::test_lite_vector_cache_gives_milvus_results_and_follows_writes",)),
    Bug("fused search drops the filter for a query without words", "milvus_store.py",
        "results.append(self.search(vector[None], top_k, search_filter)[0])",
        "results.append(self.search(vector[None], top_k, None)[0])",
        ("tests/test_text_match.py::test_a_word_only_one_photo_has_ranks_it_first[lite]",)),
    Bug("stored time-zone offset not read back", "milvus_store.py",
        "None if offset == UNKNOWN_OFFSET else offset,", "None,",
        ("tests/test_metadata.py::test_filters_select_exactly_the_photos_whose_headers_match[lite]",)),
    Bug("skipped subfolder named with a trailing slash not skipped", "milvus_store.py",
        "s.rstrip(os.sep) + os.sep for s in except_under", "s.rstrip() + os.sep for s in except_under",
        ("tests/test_store.py::test_files_under_a_folder_but_not_its_listed_subfolders[lite]",)),
    Bug("a collection left without its vector index stays unloadable", "milvus_store.py",
        "        if described:\n            index_type", "        if not described:\n            return\n        if described:\n            index_type",
        ("tests/test_store.py::test_a_collection_left_without_its_vector_index_gets_an_exact_one[lite]",)),
    Bug("Lite's swap loses the words' index", "milvus_store.py",
        '"text_sparse" not in self._call("list_indexes", self.collection_name):\n'
        '            index_params.add_index("text_sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")',
        '"text_sparse" not in self._call("list_indexes", self.collection_name):\n            pass',
        ("tests/test_store.py::test_a_collection_with_an_approximate_index_is_moved_to_exact_search[lite]",)),
    Bug("an HTTP clip-server still starting is taken as ready", "imsearch/encoders/service.py",
        'if isinstance(status, dict) and status.get("code", 0) not in (0, "SUCCESS"):', "if False:",
        ("tests/test_service.py::test_an_http_server_that_is_not_ready_or_answers_no_json_is_named",)),
    Bug("a recorded transform's resize mode read back as the default", "imsearch/encoders/preprocess.py",
        'record.get("resize_mode") or "shortest"', '"shortest"',
        ("tests/test_onnx_runtime.py::test_a_recorded_transform_reads_back_as_it_was_written",)),
    Bug("padding in black whatever colour was recorded", "imsearch/encoders/preprocess.py",
        "(fill,) * len(image.getbands()))", "0)",
        ("tests/test_onnx_runtime.py::test_a_recorded_transform_reads_back_as_it_was_written",)),
    Bug("a palette image padded through a palette of its own (black)", "imsearch/encoders/preprocess.py",
        "image = ImageOps.expand(image,",  # the image's pixels padded without its palette
        "image = ImageOps.expand(Image.frombytes(image.mode, image.size, image.tobytes()),",
        ("tests/test_onnx_runtime.py::test_transform_matches_open_clip_on_photos_and_odd_sizes[longest]",)),
]


def scratch_copy() -> Path:
    target = Path(tempfile.mkdtemp(prefix="planted-"))
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    for venv in (".venv-clip-server",):  # tests look for it beside the checkout
        if (ROOT / venv).exists():
            (target / venv).symlink_to(ROOT / venv)
    return target


def stale(bugs: list[Bug] = BUGS, root: Path = ROOT) -> list[str]:
    """What no longer applies: an edit whose text is not in its file exactly once (the code moved on, so
    nothing would be planted, or more than meant), or a named test that no longer exists."""
    problems = []
    for bug in bugs:
        source = (root / bug.file).read_text() if (root / bug.file).is_file() else ""
        for old, _ in bug.edits():
            if source.count(old) != 1:
                problems.append(f"{bug.name}: {old[:60]!r} is in {bug.file} {source.count(old)} times, not once")
        for test in bug.tests:
            path, _, name = test.partition("::")
            tests = (root / path).read_text() if (root / path).is_file() else ""
            if not tests or (name and not re.search(rf"^(async )?def {re.escape(name.split('[')[0])}\(", tests, re.M)):
                problems.append(f"{bug.name}: its test {test} does not exist")
    return problems


def run(bug: Bug, copy: Path) -> tuple[bool, str, float]:
    path = copy / bug.file
    original = planted = path.read_text()
    for old, new in bug.edits():
        if old not in planted:
            return False, f"planting failed: {old[:60]!r} not in {bug.file} (--check lists every such bug)", 0.0
        planted = planted.replace(old, new)
    path.write_text(planted)
    started = time.time()
    try:
        env = {**os.environ, "PYTHONPATH": str(copy)}
        done = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-x", "-q", "-p", "no:cacheprovider", *bug.tests],
                              cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        path.write_text(original)
    failed = [line.split(" - ")[0].removeprefix(line.split()[0] + " ") for line in done.stdout.splitlines()
              if line.startswith(("FAILED tests/", "ERROR tests/"))]  # not a captured log's "ERROR    uvicorn..."
    last = (done.stdout.strip() or done.stderr.strip() or "no output").splitlines()[-1]
    # pytest exits 1 when a test failed (or its fixture did); 2-4 mean the run itself broke (a plant that
    # does not import, a test that is not collected): that proves nothing about the tests, so it is no catch
    if done.returncode not in (0, 1):
        return False, f"the run broke (pytest exit {done.returncode}): {last}", time.time() - started
    return done.returncode == 1, (failed[0] if failed else last), time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only bugs whose name contains this")
    parser.add_argument("--check", action="store_true", help="only check that every bug still plants and its tests exist")
    args = parser.parse_args()
    if args.check:
        problems = stale()
        print("\n".join(problems) or f"all {len(BUGS)} bugs plant once and name tests that exist")
        return 1 if problems else 0
    copy = scratch_copy()
    missed = 0
    try:
        for bug in (b for b in BUGS if args.k.lower() in b.name.lower()):
            caught, detail, seconds = run(bug, copy)
            missed += not caught
            print(f"{'caught' if caught else 'MISSED'}  {bug.name}  [{seconds:.0f}s]  {detail}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    print(f"{missed} missed" if missed else "every planted bug was caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
