//! Tells the code which HDF5 API it compiles against: HDF5 2 gave
//! `H5Dread_chunk` a buffer-size argument (`cfg(hdf5_2)`). The version
//! comes from hdf5-sys (a `links = "hdf5"` crate), which announces every
//! release up to the one it found as `version_X_Y_Z` metadata.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hdf5_2)");
    if std::env::var_os("DEP_HDF5_VERSION_2_0_0").is_some() {
        println!("cargo::rustc-cfg=hdf5_2");
    }
}
