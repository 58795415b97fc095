//! Certificates and QUIC endpoints. Servers make a fresh self-signed
//! certificate for the name [`SERVER_NAME`]; callers trust exactly the
//! certificate they were given (pinning), nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, Connection, Endpoint, ServerConfig, TransportConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{NetError, Result};

/// The name every anncat certificate is made for and every caller checks.
pub const SERVER_NAME: &str = "anncat";

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
    /// A fresh self-signed certificate for [`SERVER_NAME`].
    pub fn generate() -> Result<Identity> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| NetError::Tls(format!("cannot make a certificate: {e}")))?;
        Ok(Identity {
            certificate: ck.cert.der().to_vec(),
            key: ck.signing_key.serialize_der(),
        })
    }

    /// The certificate as PEM text (for the cluster file).
    pub fn certificate_pem(&self) -> String {
        pem_of_der(&self.certificate)
    }
}

/// PEM text of a DER certificate.
pub fn pem_of_der(der: &[u8]) -> String {
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
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// DER bytes of a PEM certificate.
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
            _ => return Err(NetError::Tls("certificate is not valid PEM".into())),
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
        return Err(NetError::Tls("certificate is empty".into()));
    }
    Ok(out)
}

fn server_config(identity: &Identity, tuning: &TransportTuning) -> Result<ServerConfig> {
    let cert = CertificateDer::from(identity.certificate.clone());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = ServerConfig::with_single_cert(vec![cert], key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
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

/// Connects to `addr`, trusting only `certificate`.
pub async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
    certificate: &[u8],
    tuning: &TransportTuning,
) -> Result<Connection> {
    let config = client_config(certificate, tuning)?;
    let connecting = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| NetError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    connecting.await.map_err(|e| NetError::Connect {
        addr,
        reason: e.to_string(),
    })
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
        let id = Identity::generate().expect("identity");
        assert_eq!(
            der_of_pem(&id.certificate_pem()).expect("pem"),
            id.certificate
        );
    }
}
