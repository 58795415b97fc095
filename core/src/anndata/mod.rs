//! AnnData stores on zarr (and `.h5ad` files read as zarr): the store and
//! its nodes, element encodings, data types, output layout, and
//! consolidated metadata.

pub mod atomic_store;
pub mod backend;
pub(crate) mod blosc_encode;
mod blosc_frames;
mod blosc_lz4;
pub(crate) mod blosc_lz4_encode;
pub mod consolidate;
pub mod dtype;
pub mod durable;
pub mod element;
#[cfg(feature = "hdf5")]
pub mod h5;
#[cfg(not(feature = "hdf5"))]
#[path = "h5_absent.rs"]
pub mod h5;
#[cfg(feature = "hdf5")]
mod h5_records;
#[cfg(feature = "hdf5")]
pub mod h5_write;
/// Without the `hdf5` feature, writing `.h5ad` refuses (see [`h5`]).
#[cfg(not(feature = "hdf5"))]
pub mod h5_write {
    pub use super::h5::{H5WriteSummary, write_h5ad};
}
mod hdf5_signature;
mod huge_buffer;
pub mod layout;
pub mod legacy;
pub mod output_store;
pub mod range_read;
pub mod read;
pub mod sandbox;
pub mod sparse;
pub mod store;
pub mod store_cache;
pub mod structured;
pub mod write_behind;

pub use dtype::DType;
pub use element::{Element, Encoding, read_tree};
pub use output_store::OutputStore;
pub use store::{Store, ZarrFormat};
