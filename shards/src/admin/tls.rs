//! `POST /admin/tls/reload`: reads the TLS certificate and key files again and serves them to new
//! handshakes; live sessions keep the certificate they started with.
//!
//! Answers 200 with the new generation, 500 with the reason when the files are bad (the previous
//! certificate stays in use; counted in `lattice_tls_cert_reload_failures_total`), 409 when TLS is
//! not configured.

use std::sync::Arc;

use lattice_runtime::net::tls::TlsSource;
use lattice_runtime::telemetry::admin::{Response, Routes};

/// Registers the TLS routes.
pub fn add(r: &mut Routes, tls: Option<Arc<TlsSource>>) {
    r.add(
        "POST",
        "/admin/tls/reload",
        Box::new(move |req| {
            let Some(source) = tls.as_deref() else {
                return Response::error(409, "tls is not configured (tls.cert and tls.key)");
            };
            match source.reload() {
                Ok(l) => {
                    tracing::info!(
                        by = %req.peer,
                        generation = l.generation,
                        certificates = l.chain_len,
                        "tls: certificate reloaded by the admin route"
                    );
                    Response::json(
                        200,
                        format!(
                            "{{\"generation\":{},\"certificates\":{}}}\n",
                            l.generation, l.chain_len
                        ),
                    )
                }
                Err(e) => {
                    tracing::error!(by = %req.peer, key = e.key(), error = %e, "tls: reload failed; the previous certificate stays in use");
                    Response::error(
                        500,
                        &format!(
                            "reload failed, the previous certificate stays in use: `{}`: {e}",
                            e.key()
                        ),
                    )
                }
            }
        }),
    );
}
