//! Certificates and QUIC endpoints. Servers make a self-signed certificate
//! naming the addresses and host names they are reached by; callers trust
//! exactly the certificate they were given (pinning), nothing else, and
//! check that it names the host they dialled.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, Connection, Endpoint, ServerConfig, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{NetError, Result};

/// How long opening a connection (QUIC and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Timing of connection liveness: how fast a dead peer is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportTuning {
    /// A connection with no packets for this long is dead.
    pub idle_timeout: Duration,
    /// Keep-alive packets are sent this often.
    pub keep_alive: Duration,
}

impl Default for TransportTuning {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_millis(1000),
            keep_alive: Duration::from_millis(200),
        }
    }
}

impl TransportTuning {
    fn transport(&self) -> Result<Arc<TransportConfig>> {
        let mut t = TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| NetError::Tls(format!("idle timeout: {e}")))?;
        t.max_idle_timeout(Some(idle));
        t.keep_alive_interval(Some(self.keep_alive));
        Ok(Arc::new(t))
    }
}

/// A server's certificate and private key.
#[derive(Clone)]
pub struct Identity {
    /// The certificate (DER), which callers pin.
    pub certificate: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field(
                "certificate",
                &format_args!("{} bytes", self.certificate.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh self-signed certificate naming `names` (host names or IP
    /// addresses; duplicates and empty names are dropped).
    pub fn generate(names: &[String]) -> Result<Identity> {
        let mut unique: Vec<String> = Vec::new();
        for n in names {
            let n = n.trim().trim_start_matches('[').trim_end_matches(']');
            if !n.is_empty() && !unique.iter().any(|u| u.eq_ignore_ascii_case(n)) {
                unique.push(n.to_string());
            }
        }
        if unique.is_empty() {
            return Err(NetError::Tls(
                "a certificate needs at least one name".into(),
            ));
        }
        let ck = rcgen::generate_simple_self_signed(unique.clone())
            .map_err(|e| NetError::Tls(format!("cannot make a certificate for {unique:?}: {e}")))?;
        Ok(Identity {
            certificate: ck.cert.der().to_vec(),
            key: ck.signing_key.serialize_der(),
        })
    }

    /// An identity from a PEM certificate and a PEM (PKCS#8) private key,
    /// as `anncat keygen` writes them.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Identity> {
        let certificate = der_of_pem(certificate_pem)?;
        let key = der_of_pem(key_pem)?;
        // Refuse a key that does not belong to the certificate now, not at
        // the first handshake.
        server_config(
            &Identity {
                certificate: certificate.clone(),
                key: key.clone(),
            },
            &TransportTuning::default(),
        )?;
        Ok(Identity { certificate, key })
    }

    /// The certificate as PEM text (for the cluster file).
    pub fn certificate_pem(&self) -> String {
        pem_of_der(&self.certificate)
    }

    /// The private key as PEM text (PKCS#8).
    pub fn key_pem(&self) -> String {
        pem_block("PRIVATE KEY", &self.key)
    }
}

/// The names a server's certificate carries: the address it listens on
/// (unless all interfaces; a loopback address also as `localhost`) and
/// every name it is advertised under.
pub fn certificate_names(listen: IpAddr, advertise: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if !listen.is_unspecified() {
        names.push(listen.to_string());
        if listen.is_loopback() {
            names.push("localhost".to_string());
        }
    }
    names.extend(advertise.iter().cloned());
    names
}

/// PEM text of a DER certificate.
pub fn pem_of_der(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(TABLE[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// DER bytes of a PEM block (certificate or key).
pub fn der_of_pem(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.chars() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            '=' => break,
            _ => return Err(NetError::Tls("not valid PEM".into())),
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if out.is_empty() {
        return Err(NetError::Tls("empty PEM".into()));
    }
    Ok(out)
}

fn server_config(identity: &Identity, tuning: &TransportTuning) -> Result<ServerConfig> {
    let cert = CertificateDer::from(identity.certificate.clone());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = ServerConfig::with_single_cert(vec![cert], key)
        .map_err(|e| NetError::Tls(format!("certificate and key do not fit: {e}")))?;
    config.transport_config(tuning.transport()?);
    Ok(config)
}

/// Client configuration that trusts exactly `certificate` (DER).
pub fn client_config(certificate: &[u8], tuning: &TransportTuning) -> Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certificate.to_vec()))
        .map_err(|e| NetError::Tls(format!("bad pinned certificate: {e}")))?;
    let mut config = ClientConfig::with_root_certificates(Arc::new(roots))
        .map_err(|e| NetError::Tls(e.to_string()))?;
    config.transport_config(tuning.transport()?);
    Ok(config)
}

/// An endpoint that accepts connections with `identity` on `bind` and can
/// also open connections.
pub fn server_endpoint(
    bind: SocketAddr,
    identity: &Identity,
    tuning: &TransportTuning,
) -> Result<Endpoint> {
    Endpoint::server(server_config(identity, tuning)?, bind).map_err(|e| NetError::Bind {
        addr: bind,
        reason: e.to_string(),
    })
}

/// An endpoint that only opens connections.
pub fn client_endpoint() -> Result<Endpoint> {
    let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
    Endpoint::client(bind).map_err(|e| NetError::Bind {
        addr: bind,
        reason: e.to_string(),
    })
}

/// Connects to `addr`, trusting only `certificate`, which must name
/// `server_name` (the host name or IP address the caller dialled). Gives up
/// after [`CONNECT_TIMEOUT`].
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
    certificate: &[u8],
    tuning: &TransportTuning,
) -> Result<Connection> {
    let config = client_config(certificate, tuning)?;
    let server_name = server_name.trim_start_matches('[').trim_end_matches(']');
    let connecting = endpoint
        .connect_with(config, addr, server_name)
        .map_err(|e| NetError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(conn) => conn.map_err(|e| NetError::Connect {
            addr,
            reason: e.to_string(),
        }),
        Err(_) => Err(NetError::Connect {
            addr,
            reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        for n in [1usize, 2, 3, 100, 101, 102] {
            let der: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            assert_eq!(der_of_pem(&pem_of_der(&der)).expect("pem"), der);
        }
        let id = Identity::generate(&["localhost".into()]).expect("identity");
        assert_eq!(
            der_of_pem(&id.certificate_pem()).expect("pem"),
            id.certificate
        );
        let again = Identity::from_pem(&id.certificate_pem(), &id.key_pem()).expect("from pem");
        assert_eq!(again.certificate, id.certificate);
        let other = Identity::generate(&["localhost".into()]).expect("identity");
        assert!(Identity::from_pem(&id.certificate_pem(), &other.key_pem()).is_err());
        assert!(Identity::generate(&[" ".into()]).is_err());
    }

    /// The certificate must name what the caller dialled: a connection to
    /// an address the certificate does not name fails verification.
    #[tokio::test]
    async fn certificate_names_are_checked() {
        let id = Identity::generate(&["127.0.0.1".into(), "sched.example".into()]).expect("id");
        let tuning = TransportTuning::default();
        let server = server_endpoint(([127, 0, 0, 1], 0).into(), &id, &tuning).expect("server");
        let addr = server.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                if let Ok(conn) = incoming.await {
                    conn.closed().await;
                }
            }
        });
        let client = client_endpoint().expect("client");
        for good in ["127.0.0.1", "sched.example"] {
            connect(&client, addr, good, &id.certificate, &tuning)
                .await
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["10.1.2.3", "other.example"] {
            let err = connect(&client, addr, bad, &id.certificate, &tuning)
                .await
                .expect_err(bad);
            assert!(err.to_string().contains("certificate"), "{bad}: {err}");
        }
        accept.abort();
    }
}
