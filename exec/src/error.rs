//! The error type of anncat's library crates (`anncat-exec`, and
//! `anncat-core` above it): every failure names the store and the element
//! it concerns, in one line, and says what kind of failure it is.

use std::path::{Path, PathBuf};

/// Result alias used throughout the library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading, planning or writing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem with one element (or the root, `element == "/"`) of a store.
    #[error("{store}: {element}: {message}")]
    Element {
        /// The store (directory) concerned.
        store: PathBuf,
        /// The element path inside the store, e.g. `obs/_index`.
        element: String,
        /// What is wrong, in a few words.
        message: String,
    },
    /// A problem with a path as a whole (missing, unwritable, not a store).
    #[error("{path}: {message}")]
    Path {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An invalid option or combination of options.
    #[error("invalid option: {0}")]
    Option(String),
    /// A network address that is malformed or does not resolve.
    #[error("{0}")]
    Address(String),
    /// Data the inputs hold that cannot be combined as asked (incompatible
    /// dtypes or kinds across inputs); the message names the element.
    #[error("{0}")]
    Data(String),
    /// A task graph that cannot run: a duplicate id, an unknown dependency
    /// or kernel, a cycle, or a task larger than the memory limit.
    #[error("task graph: {0}")]
    Graph(String),
    /// A task that failed while it ran (the message carries what failed).
    #[error("{0}")]
    Task(String),
    /// A broken invariant of anncat itself: a bug, never the user's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An error about `element` in `store`.
    pub fn element(store: &Path, element: &str, message: impl std::fmt::Display) -> Self {
        let element = if element.is_empty() { "/" } else { element };
        Error::Element {
            store: store.to_path_buf(),
            element: element.to_string(),
            message: one_line(&message.to_string()),
        }
    }

    /// An error about a path as a whole.
    pub fn path(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::Path {
            path: path.to_path_buf(),
            message: one_line(&message.to_string()),
        }
    }

    /// An error about an option given by the user.
    pub fn option(message: impl std::fmt::Display) -> Self {
        Error::Option(one_line(&message.to_string()))
    }

    /// Data that cannot be combined; `message` names the element.
    pub fn data(message: impl std::fmt::Display) -> Self {
        Error::Data(one_line(&message.to_string()))
    }

    /// A task graph that cannot run.
    pub fn graph(message: impl std::fmt::Display) -> Self {
        Error::Graph(one_line(&message.to_string()))
    }

    /// A broken invariant of anncat itself.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Error::Internal(one_line(&message.to_string()))
    }
}

/// Collapses a multi-line message (some library errors span lines) to one line.
pub fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(part);
    }
    out
}

/// An I/O error's reason without the "(os error N)" noise; a message of
/// anncat's own (such as an `--allow-write` refusal) as it is.
pub fn io_reason(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        return inner.to_string();
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::AlreadyExists => "already exists".to_string(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_store_and_element() {
        let e = Error::element(Path::new("/data/a.zarr"), "obs/_index", "bad\n  chunk\n");
        assert_eq!(e.to_string(), "/data/a.zarr: obs/_index: bad; chunk");
        let root = Error::element(Path::new("a.zarr"), "", "not an AnnData store");
        assert_eq!(root.to_string(), "a.zarr: /: not an AnnData store");
    }

    #[test]
    fn each_kind_says_what_it_is() {
        assert_eq!(
            Error::option("--join x").to_string(),
            "invalid option: --join x"
        );
        assert_eq!(
            Error::data("obs/a: incompatible").to_string(),
            "obs/a: incompatible"
        );
        assert_eq!(Error::graph("cycle").to_string(), "task graph: cycle");
        assert_eq!(Error::internal("x").to_string(), "internal error: x");
    }
}
