"""Transitional: the old home of the dataset registry, now :mod:`dynalay_env.datasets`."""

from dynalay_env.datasets import CACHE_DIR_ENV as CACHE_DIR_ENV  # transitional: removed at merge
from dynalay_env.datasets import DATA_ROOT_ENV as DATA_ROOT_ENV  # transitional: removed at merge
from dynalay_env.datasets import DATASETS as DATASETS  # transitional: removed at merge
from dynalay_env.datasets import DEFAULT_DATASET as DEFAULT_DATASET  # transitional: removed at merge
from dynalay_env.datasets import SHIPPED_DATA_DIR as SHIPPED_DATA_DIR  # transitional: removed at merge
from dynalay_env.datasets import SPLITS as SPLITS  # transitional: removed at merge
from dynalay_env.datasets import Dataset as Dataset  # transitional: removed at merge
from dynalay_env.datasets import DatasetFormatError as DatasetFormatError  # transitional: removed at merge
from dynalay_env.datasets import DatasetLoader as DatasetLoader  # transitional: removed at merge
from dynalay_env.datasets import DatasetNotFoundError as DatasetNotFoundError  # transitional: removed at merge
from dynalay_env.datasets import available_datasets as available_datasets  # transitional: removed at merge
from dynalay_env.datasets import clear_cache as clear_cache  # transitional: removed at merge
from dynalay_env.datasets import default_cache_dir as default_cache_dir  # transitional: removed at merge
from dynalay_env.datasets import load_dataset as load_dataset  # transitional: removed at merge
from dynalay_env.datasets import make_synthetic as make_synthetic  # transitional: removed at merge
from dynalay_env.datasets import read_idx as read_idx  # transitional: removed at merge
from dynalay_env.datasets import register_dataset as register_dataset  # transitional: removed at merge
from dynalay_env.datasets import ship_mnist1d as ship_mnist1d  # transitional: removed at merge
