//! `--allow-write` as a worker process has it: every write and delete
//! through the sandbox (and a store created outside) is refused naming
//! `--allow-write`. A test binary of its own, since the allowed roots are
//! fixed once per process.

use anncat_core::anndata::atomic_store::restrict_writes;
use anncat_core::anndata::{OutputStore, ZarrFormat, sandbox};

#[test]
fn writes_and_deletes_outside_the_allowed_directories_are_refused() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    assert!(restrict_writes(&[allowed.path().to_path_buf()]));
    let victim = other.path().join("keep.txt");
    std::fs::write(&victim, b"x").expect("setup");
    let outside = other.path().join("spill");
    let refusals = [
        sandbox::create_dir_all(&outside).err(),
        sandbox::create_dir(&outside).err(),
        sandbox::create_file(&outside.join("f")).err(),
        sandbox::write(&outside.join("f"), b"x").err(),
        sandbox::rename(&victim, &other.path().join("moved")).err(),
        sandbox::remove_file(&victim).err(),
        sandbox::remove_dir_all(other.path()).err(),
    ];
    for (i, e) in refusals.into_iter().enumerate() {
        let e = e.unwrap_or_else(|| panic!("call {i} was allowed"));
        assert!(e.to_string().contains("--allow-write"), "call {i}: {e}");
    }
    assert!(
        victim.is_file() && !outside.exists(),
        "something was touched"
    );
    let e = OutputStore::create(&other.path().join("out.zarr"), ZarrFormat::V2)
        .expect_err("store outside")
        .to_string();
    assert!(e.contains("--allow-write"), "{e}");
    // Inside: allowed.
    let inside = allowed.path().join("spill/part");
    sandbox::create_dir_all(&inside).expect("inside");
    sandbox::write(&inside.join("f"), b"x").expect("write inside");
    sandbox::remove_dir_all(&allowed.path().join("spill")).expect("remove inside");
}
