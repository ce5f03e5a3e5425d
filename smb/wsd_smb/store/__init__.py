"""The SMB2 object store: shares, path resolution confined to a share, opens with share
modes and delete-on-close, I/O, rename, byte-range locks, directory enumeration and the
MS-FSCC information classes.  See docs/smb-store.md."""
from .objectstore import CreateResult, FileObject, ObjectStore, Open, PendingLock  # noqa: F401
from .paths import Share, resolve, split_name  # noqa: F401
