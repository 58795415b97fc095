//! The cluster file (where the scheduler listens, its certificate, the
//! shared secret), host:port addresses and their resolution, and the
//! checks of a hello: the network side of joining a cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anncat_exec::error::{Error, Result, io_reason};
use anncat_exec::protocol::PROTOCOL_VERSION;
use serde::{Deserialize, Serialize};

/// The cluster file the scheduler writes (mode 0600): where it listens,
/// its certificate (PEM) to pin, and the shared secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Scheduler address, `HOST:PORT`; HOST is a name or an IP address
    /// (`[v6]:port` for IPv6) that the scheduler's certificate names.
    pub address: String,
    /// Scheduler certificate, PEM.
    pub certificate: String,
    /// Cluster secret (hex).
    pub secret: String,
}

impl ClusterFile {
    /// Reads and checks a cluster file.
    pub fn read(path: &Path) -> Result<ClusterFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::path(path, format!("cannot read cluster file: {}", io_reason(&e)))
        })?;
        let file: ClusterFile = serde_json::from_str(&text)
            .map_err(|e| Error::path(path, format!("not a valid cluster file: {e}")))?;
        if file.secret.len() < 32 {
            return Err(Error::path(path, "cluster file secret is too short"));
        }
        Ok(file)
    }

    /// Writes the cluster file atomically with mode 0600.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::path(path, format!("cannot encode cluster file: {e}")))?;
        write_private(path, text.as_bytes())
            .map_err(|e| Error::path(path, format!("cannot write cluster file: {e}")))
    }

    /// The host part of the address (the name the certificate must carry).
    pub fn host(&self) -> &str {
        split_host_port(&self.address).map_or(self.address.as_str(), |(h, _)| h)
    }

    /// The scheduler's socket address (the host name resolved; IPv4 first).
    pub fn resolve(&self) -> Result<SocketAddr> {
        resolve_address(&self.address)
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`) into the host (without brackets)
/// and the port.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

/// `HOST:PORT`, with brackets around an IPv6 host (what
/// [`split_host_port`] splits).
pub fn host_port(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `HOST:PORT` to a socket address (IPv4 first).
pub fn resolve_address(address: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let (host, port) = split_host_port(address).ok_or_else(|| {
        Error::Address(format!(
            "address {address:?} is not HOST:PORT (a host name or IP address and a port)"
        ))
    })?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Address(format!("cannot resolve {host:?} (from {address:?}): {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| Error::Address(format!("{host:?} (from {address:?}) has no address")))
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, then a
/// rename), readable by the owner only (mode 0600): cluster files and keys.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nonce}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        // A new file only: never write through a file or link left there.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_reason(&e)
    })
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a hello's version and secret against ours; the refusal reason
/// when they do not match.
pub fn check_hello(
    version: u32,
    secret: &str,
    expected_secret: &str,
) -> std::result::Result<(), String> {
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version mismatch: peer speaks {version}, this side {PROTOCOL_VERSION} (use the same anncat build everywhere)"
        ));
    }
    if !secrets_match(secret, expected_secret) {
        return Err("wrong cluster secret (use the cluster file the scheduler wrote)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_checks_version_and_secret() {
        assert!(check_hello(PROTOCOL_VERSION, "abc", "abc").is_ok());
        assert!(
            check_hello(PROTOCOL_VERSION, "abd", "abc")
                .expect_err("secret")
                .contains("secret")
        );
        assert!(
            check_hello(PROTOCOL_VERSION + 1, "abc", "abc")
                .expect_err("version")
                .contains("version")
        );
        assert!(!secrets_match("abc", "abcd"));
    }

    #[test]
    fn cluster_file_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("cluster.json");
        let f = ClusterFile {
            address: "127.0.0.1:4000".into(),
            certificate: "PEM".into(),
            secret: "0".repeat(64),
        };
        f.write(&path).expect("write");
        assert_eq!(ClusterFile::read(&path).expect("read"), f);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "{").expect("write");
        assert!(ClusterFile::read(&path).is_err());
        assert_eq!(f.host(), "127.0.0.1");
        assert_eq!(f.resolve().expect("resolve").port(), 4000);
    }

    #[test]
    fn addresses_split_and_resolve() {
        assert_eq!(split_host_port("node-1:7878"), Some(("node-1", 7878)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port("node-1"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:99999"), None);
        for (host, port) in [("node-1", 7878), ("10.0.0.1", 1), ("::1", 9)] {
            assert_eq!(split_host_port(&host_port(host, port)), Some((host, port)));
        }
        let a = resolve_address("localhost:80").expect("localhost");
        assert!(a.ip().is_loopback() && a.port() == 80);
        assert!(resolve_address("no-such-host.invalid:1").is_err());
        assert!(
            resolve_address("nonsense")
                .expect_err("no port")
                .to_string()
                .contains("HOST:PORT")
        );
    }
}
