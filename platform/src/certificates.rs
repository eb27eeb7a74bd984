//! Certificates as tenants and operators give them: PEM in, a rustls
//! `CertifiedKey` out, or an error that says exactly what is wrong.

use std::sync::Arc;

use edge_config::tls::{CertificatePem, MAX_CERTIFICATE_PEM_BYTES};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

/// Why a certificate was refused. The messages are shown to the tenant.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("the certificate PEM is over {MAX_CERTIFICATE_PEM_BYTES} bytes")]
    CertificateTooLarge,
    #[error("the key PEM is over {MAX_CERTIFICATE_PEM_BYTES} bytes")]
    KeyTooLarge,
    #[error("the certificate PEM holds no certificate")]
    NoCertificate,
    #[error("the certificate PEM is malformed: {0}")]
    BadCertificatePem(String),
    #[error("the certificate is not a valid X.509 certificate: {0}")]
    BadCertificate(String),
    #[error("the key PEM holds no private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the private key is not usable: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("the certificate does not cover {domain:?}")]
    NotCovering { domain: String },
}

/// A checked certificate chain and key, ready to serve.
#[derive(Debug, Clone)]
pub struct ServingCertificate {
    pub key: Arc<CertifiedKey>,
}

impl ServingCertificate {
    /// The leaf certificate (DER).
    fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.key.cert.first()
    }

    /// Whether the certificate is valid for `domain` (see `covers`).
    pub fn covers(&self, domain: &str) -> bool {
        self.leaf()
            .and_then(|leaf| webpki::EndEntityCert::try_from(leaf).ok())
            .is_some_and(|parsed| covers(&parsed, domain))
    }

    /// sha256 of the leaf certificate, hex: how a tenant tells certificates
    /// apart without seeing any key material.
    pub fn fingerprint_sha256(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            self.leaf().map_or(&[][..], |leaf| leaf.as_ref()),
        ))
    }
}

impl ServingCertificate {
    /// Parses `pem`, checks that the key matches the leaf certificate and
    /// that the certificate covers every one of `domains`.
    pub fn from_pem(
        pem: &CertificatePem,
        domains: &[String],
        provider: &CryptoProvider,
    ) -> Result<Self, CertificateError> {
        if pem.cert_pem.len() > MAX_CERTIFICATE_PEM_BYTES {
            return Err(CertificateError::CertificateTooLarge);
        }
        if pem.key_pem.0.len() > MAX_CERTIFICATE_PEM_BYTES {
            return Err(CertificateError::KeyTooLarge);
        }
        let chain = CertificateDer::pem_slice_iter(pem.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertificateError::BadCertificatePem(e.to_string()))?;
        let leaf = chain.first().ok_or(CertificateError::NoCertificate)?;
        let parsed = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| CertificateError::BadCertificate(format!("{e:?}")))?;
        for domain in domains {
            if !covers(&parsed, domain) {
                return Err(CertificateError::NotCovering {
                    domain: domain.clone(),
                });
            }
        }
        let key = PrivateKeyDer::from_pem_slice(pem.key_pem.0.as_bytes())
            .map_err(|_| CertificateError::NoKey)?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertificateError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertificateError::KeyMismatch);
            }
            // The key type cannot say: the handshake will.
            Err(_) => {}
        }
        Ok(Self {
            key: Arc::new(certified),
        })
    }
}

/// Whether the certificate is valid for `domain`. A wildcard domain
/// (`*.example.com`) needs a certificate that covers any name directly
/// under it, which is what a `*.example.com` certificate does.
fn covers(certificate: &webpki::EndEntityCert<'_>, domain: &str) -> bool {
    let probe = match domain.strip_prefix("*.") {
        Some(suffix) => format!("wildcard-probe.{suffix}"),
        None => domain.to_string(),
    };
    let Ok(name) = ServerName::try_from(probe.as_str()) else {
        return false;
    };
    certificate.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A development certificate authority and a certificate it signed for
/// `names` (host names or IP addresses): `(CA certificate PEM, server
/// certificate and key)`. Clients that trust the CA file trust the server.
pub fn development_ca(names: &[&str]) -> anyhow::Result<(String, CertificatePem)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "edge platform development CA");
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
    let server = CertificateParams::new(names)?;
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok((
        ca_cert.pem(),
        CertificatePem {
            cert_pem: server_cert.pem(),
            key_pem: edge_config::tls::SecretPem(server_key.serialize_pem()),
        },
    ))
}

/// A self-signed certificate for `names`: development, and the default a
/// node serves to clients that send no SNI when the operator gave none.
pub fn self_signed(names: &[&str]) -> anyhow::Result<CertificatePem> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names)?;
    Ok(CertificatePem {
        cert_pem: generated.cert.pem(),
        key_pem: edge_config::tls::SecretPem(generated.signing_key.serialize_pem()),
    })
}

/// The one crypto provider: ring, on the node and the control plane alike.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `client` made to trust the CA certificates of the PEM file at `ca_file`
/// and nothing else (no public roots): how a node, and edgectl, reach a
/// control plane whose certificate an operator's CA signed.
pub fn trust_only(
    client: reqwest::ClientBuilder,
    ca_file: &std::path::Path,
) -> Result<reqwest::ClientBuilder, String> {
    let unreadable = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", ca_file.display());
    let pem = std::fs::read(ca_file).map_err(|e| unreadable(&e))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unreadable(&e))?;
    if roots.is_empty() {
        return Err(format!(
            "ca_file {} holds no certificate",
            ca_file.display()
        ));
    }
    Ok(roots
        .into_iter()
        .fold(client.tls_built_in_root_certs(false), |client, root| {
            client.add_root_certificate(root)
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn domains(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    #[test]
    fn a_matching_certificate_is_accepted_for_its_names() {
        let pem = self_signed(&["shop.example", "*.shop.example"]).expect("cert");
        let domains = domains(&["shop.example", "*.shop.example"]);
        ServingCertificate::from_pem(&pem, &domains, &provider()).expect("accepted");
    }

    #[test]
    fn every_bad_input_is_refused_with_its_reason() {
        let good = self_signed(&["shop.example"]).expect("cert");
        let other = self_signed(&["shop.example"]).expect("cert");
        let check = |pem: &CertificatePem, names: &[&str]| {
            ServingCertificate::from_pem(pem, &domains(names), &provider()).map(|_| ())
        };
        assert_eq!(
            check(&good, &["other.example"]),
            Err(CertificateError::NotCovering {
                domain: "other.example".into()
            })
        );
        assert_eq!(
            check(&good, &["*.shop.example"]),
            Err(CertificateError::NotCovering {
                domain: "*.shop.example".into()
            })
        );
        // A certificate and a key from anywhere, checked as a pair.
        let pair = |cert_pem: &str, key_pem: &str| {
            let pem = CertificatePem {
                cert_pem: cert_pem.into(),
                key_pem: edge_config::tls::SecretPem(key_pem.into()),
            };
            check(&pem, &["shop.example"])
        };
        assert_eq!(
            pair(&good.cert_pem, &other.key_pem.0),
            Err(CertificateError::KeyMismatch)
        );
        assert_eq!(
            pair("not pem at all", &good.key_pem.0),
            Err(CertificateError::NoCertificate)
        );
        assert_eq!(
            pair(&good.cert_pem, &good.cert_pem),
            Err(CertificateError::NoKey)
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            pair(garbage, &good.key_pem.0),
            Err(CertificateError::BadCertificate(_))
        ));
    }
}
