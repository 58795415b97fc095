//! AnnData stores on zarr: the store and its nodes, element encodings, data
//! types, output layout, and consolidated metadata.

pub mod atomic_store;
pub mod consolidate;
pub mod dtype;
pub mod element;
pub mod layout;
pub mod read;
pub mod sparse;
pub mod store;
pub mod structured;

pub use dtype::DType;
pub use element::{Element, Encoding, read_tree};
pub use store::{Store, ZarrFormat};
