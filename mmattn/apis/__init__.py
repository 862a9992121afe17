"""Models by name and inference: ``resolve`` a model-index name or config to config + checkpoint
(published weights downloaded, SHA-256 checked, converted, cached), ``inference`` on images or
point files with mmdet's / mmseg's Inferencers or mmdet3d's detector API."""
from .inference import IMAGE_EXTS, InferenceModel, inference, init_model, list_inputs
from .weights import (CACHE_ENV, INDEX_ENV, ModelEntry, ResolvedModel, WeightsUnavailableError,
                      cache_dir, checkpoint_of, download, fetch, find_model, list_models,
                      load_model_index, model_index_path, resolve, sha256_of)

__all__ = ['CACHE_ENV', 'IMAGE_EXTS', 'INDEX_ENV', 'InferenceModel', 'ModelEntry',
           'ResolvedModel', 'WeightsUnavailableError', 'cache_dir', 'checkpoint_of', 'download',
           'fetch', 'find_model', 'inference', 'init_model', 'list_inputs', 'list_models',
           'load_model_index', 'model_index_path', 'resolve', 'sha256_of']
