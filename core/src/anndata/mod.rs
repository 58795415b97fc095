//! AnnData stores on zarr (and `.h5ad` files read as zarr): the store and
//! its nodes, element encodings, data types, output layout, and
//! consolidated metadata.

pub mod atomic_store;
pub mod backend;
pub mod consolidate;
pub mod dtype;
pub mod durable;
pub mod element;
pub mod h5;
mod h5_records;
pub mod h5_write;
pub mod layout;
pub mod legacy;
pub mod read;
pub mod sandbox;
pub mod sparse;
pub mod store;
pub mod structured;

pub use dtype::DType;
pub use element::{Element, Encoding, read_tree};
pub use store::{Store, ZarrFormat};
