"""dfs: file parts and object storage.

- :mod:`teamgram.service.dfs.store`: where files live (a local directory or an
  S3-compatible server) behind one async interface, :class:`ObjectStore`.
- :mod:`teamgram.service.dfs.uploads`: ``upload.saveFilePart`` /
  ``saveBigFilePart`` parts spooled to disk until a request uses the file.
"""

from teamgram.service.dfs.store import (
    BUCKETS,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    check_key,
    open_store,
)
from teamgram.service.dfs.uploads import (
    MAX_PARTS,
    PART_SIZE_MAX,
    AssembledFile,
    UploadService,
)

__all__ = [
    "BUCKETS",
    "MAX_PARTS",
    "PART_SIZE_MAX",
    "AssembledFile",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "UploadService",
    "check_key",
    "open_store",
]
