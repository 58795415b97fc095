//! Without the `hdf5` feature: the types and functions the rest of the
//! crate uses for `.h5ad` files, none of which can be made. Opening an
//! `.h5ad` input, or writing an `.h5ad` output, says the build lacks HDF5.

use std::path::Path;

use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

use crate::anndata::{Element, Store};
use crate::error::{Error, Result};

pub use super::hdf5_signature::is_hdf5;

/// What an HDF5-less build says of an `.h5ad` file.
pub const NO_HDF5: &str =
    "this anncat was built without HDF5 (the `hdf5` cargo feature): it cannot read or write .h5ad";

/// An `.h5ad` file read as zarr: cannot exist in this build.
#[derive(Debug)]
pub enum H5Store {}

impl H5Store {
    /// Always refuses: this build has no HDF5.
    pub fn open(_path: &Path) -> std::result::Result<H5Store, String> {
        Err(NO_HDF5.to_string())
    }

    /// Never called (no value exists).
    pub fn unsupported(&self, _node: &str) -> Option<String> {
        match *self {}
    }

    /// Never called (no value exists).
    pub fn compound_fields(&self, _node: &str) -> Option<Vec<String>> {
        match *self {}
    }

    /// Never called (no value exists).
    pub fn storage_layout(&self, _node: &str) -> Option<(Option<Vec<u64>>, Vec<String>)> {
        match *self {}
    }

    /// Never called (no value exists).
    pub fn stored_bytes(&self, _node: &str) -> u64 {
        match *self {}
    }

    /// Never called (no value exists).
    pub fn children(&self, _node: &str) -> std::result::Result<Vec<String>, String> {
        match *self {}
    }
}

impl ReadableStorageTraits for H5Store {
    fn get_partial_many<'a>(
        &'a self,
        _key: &StoreKey,
        _byte_ranges: ByteRangeIterator<'a>,
    ) -> std::result::Result<MaybeBytesIterator<'a>, StorageError> {
        match *self {}
    }

    fn size_key(&self, _key: &StoreKey) -> std::result::Result<Option<u64>, StorageError> {
        match *self {}
    }

    fn supports_get_partial(&self) -> bool {
        match *self {}
    }
}

/// What writing an `.h5ad` wrote (nothing, in this build).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct H5WriteSummary {
    /// Groups written.
    pub groups: usize,
    /// Datasets written.
    pub datasets: usize,
    /// Zarr chunks copied.
    pub chunks: u64,
}

/// Always refuses: this build has no HDF5.
pub fn write_h5ad(_src: &Store, _tree: &Element, dest: &Path) -> Result<H5WriteSummary> {
    Err(Error::path(dest, NO_HDF5))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build without HDF5 still knows an `.h5ad` when it sees one, and
    /// says what it lacks, naming the file.
    #[test]
    fn an_h5ad_input_is_refused_naming_the_missing_feature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("in.h5ad");
        let mut bytes = b"\x89HDF\r\n\x1a\n".to_vec();
        bytes.resize(4096, 0);
        std::fs::write(&f, bytes).expect("write");
        assert!(is_hdf5(&f));
        let e = Store::open(&f).expect_err("no HDF5").to_string();
        assert!(e.contains("in.h5ad") && e.contains("hdf5"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
