//! The storage behind a [`Store`](super::store::Store): a zarr directory or
//! an `.h5ad` file seen as zarr v2, for reading only (it implements no
//! zarrs write trait: writes go through
//! [`OutputStore`](super::output_store::OutputStore)).

use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, ReadableStorageTraits, StorageError,
    StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix,
};

use super::atomic_store::AtomicFsStore;
use super::h5::H5Store;

/// A zarr directory or an h5ad file.
#[derive(Debug)]
pub enum Backend {
    /// A zarr store on the filesystem.
    Zarr(AtomicFsStore),
    /// An HDF5 (`.h5ad`) file, read-only.
    H5(H5Store),
    /// Another backend read under other names: keys under `virtual_prefix`
    /// are read from under `real_prefix` (an anndata 0.7 store's
    /// `__categories/<column>`, whose `__` names zarr reserves, read as
    /// `<column>/categories`). Read-only.
    Aliased {
        /// The backend holding the data.
        inner: std::sync::Arc<Backend>,
        /// The prefix keys are asked under (ends in `/`).
        virtual_prefix: String,
        /// The prefix they are stored under (ends in `/`).
        real_prefix: String,
    },
    /// One array whose chunks are computed from another's (a field of a
    /// record array, an array of a codec zarrs lacks). Read-only.
    Derived(std::sync::Arc<dyn DerivedChunks>),
}

/// The parts `byte_ranges` of a value computed whole (an h5ad chunk, a
/// derived chunk).
pub(crate) fn byte_ranges_of<'a>(
    value: Vec<u8>,
    byte_ranges: ByteRangeIterator<'a>,
) -> Box<dyn Iterator<Item = Result<Bytes, StorageError>> + 'a> {
    let value = Bytes::from(value);
    let len = value.len() as u64;
    let parts: Vec<Result<Bytes, StorageError>> = byte_ranges
        .map(|r| Ok(value.slice(r.to_range_usize(len))))
        .collect();
    Box::new(parts.into_iter())
}

/// The chunks of a [`Backend::Derived`] array.
pub trait DerivedChunks: std::fmt::Debug + Send + Sync {
    /// The value of `key` (a chunk of the array), or `None` if there is none.
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
}

impl Backend {
    /// `key` as stored in an [`Backend::Aliased`] backend's inner one.
    fn real_key(
        virtual_prefix: &str,
        real_prefix: &str,
        key: &StoreKey,
    ) -> Result<StoreKey, StorageError> {
        match key.as_str().strip_prefix(virtual_prefix) {
            Some(rest) => StoreKey::new(format!("{real_prefix}{rest}"))
                .map_err(|e| StorageError::Other(e.to_string())),
            None => Ok(key.clone()),
        }
    }

    /// Asks the storage to start fetching `key` ahead of a read soon after
    /// (a zarr chunk file into the page cache); nothing for an h5ad file
    /// or a derived array. Advice only: never an error.
    pub fn advise_willneed(&self, key: &StoreKey) {
        match self {
            Backend::Zarr(s) => s.advise_willneed(key),
            Backend::Aliased {
                inner,
                virtual_prefix,
                real_prefix,
            } => {
                if let Ok(real) = Self::real_key(virtual_prefix, real_prefix, key) {
                    inner.advise_willneed(&real);
                }
            }
            Backend::H5(_) | Backend::Derived(_) => {}
        }
    }
}

fn not_listed() -> StorageError {
    StorageError::Other("h5ad inputs are not listed by key".into())
}

impl ReadableStorageTraits for Backend {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        match self {
            Backend::Zarr(s) => s.get_partial_many(key, byte_ranges),
            Backend::H5(s) => s.get_partial_many(key, byte_ranges),
            Backend::Aliased {
                inner,
                virtual_prefix,
                real_prefix,
            } => inner.get_partial_many(
                &Self::real_key(virtual_prefix, real_prefix, key)?,
                byte_ranges,
            ),
            Backend::Derived(d) => Ok(d
                .value(key.as_str())?
                .map(|value| byte_ranges_of(value, byte_ranges))),
        }
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        match self {
            Backend::Zarr(s) => s.size_key(key),
            Backend::H5(s) => s.size_key(key),
            Backend::Aliased {
                inner,
                virtual_prefix,
                real_prefix,
            } => inner.size_key(&Self::real_key(virtual_prefix, real_prefix, key)?),
            Backend::Derived(d) => Ok(d.value(key.as_str())?.map(|v| v.len() as u64)),
        }
    }

    fn supports_get_partial(&self) -> bool {
        match self {
            Backend::Zarr(s) => s.supports_get_partial(),
            Backend::H5(s) => s.supports_get_partial(),
            Backend::Aliased { inner, .. } => inner.supports_get_partial(),
            Backend::Derived(_) => false,
        }
    }
}

impl ListableStorageTraits for Backend {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        match self {
            Backend::Zarr(s) => s.list(),
            Backend::H5(_) | Backend::Aliased { .. } | Backend::Derived(_) => Err(not_listed()),
        }
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        match self {
            Backend::Zarr(s) => s.list_prefix(prefix),
            Backend::H5(_) | Backend::Aliased { .. } | Backend::Derived(_) => Err(not_listed()),
        }
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        match self {
            Backend::Zarr(s) => s.list_dir(prefix),
            Backend::H5(_) | Backend::Aliased { .. } | Backend::Derived(_) => Err(not_listed()),
        }
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        match self {
            Backend::Zarr(s) => s.size_prefix(prefix),
            Backend::H5(_) | Backend::Aliased { .. } | Backend::Derived(_) => Err(not_listed()),
        }
    }
}
