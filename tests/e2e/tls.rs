//! `serve` terminating TLS itself: a round trip with a self-signed
//! certificate, and a renewed certificate taking effect without a restart.

use std::time::{Duration, Instant};

use crate::harness::{self, TempDir};
use crate::serve::{TOKEN, batch, free_port, get};

/// A self-signed certificate for 127.0.0.1, as (certificate PEM, key PEM).
fn self_signed(name: &str) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), key.serialize_pem())
}

/// A client that trusts `certificate_pem` only.
fn client_trusting(certificate_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(certificate_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, port: u16, id: &str) -> Result<u16, reqwest::Error> {
    let response = client
        .post(format!("https://127.0.0.1:{port}/currents"))
        .bearer_auth(TOKEN)
        .body(batch(&[id.to_owned()]))
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_terminates_tls_and_picks_up_a_renewed_certificate() {
    let dir = TempDir::new("tls");
    let (first_cert, first_key) = self_signed("first");
    let cert_file = dir.write("cert.pem", &first_cert);
    let key_file = dir.write("key.pem", &first_key);
    let (port, ops_port) = (free_port(), free_port());
    let mut child = std::process::Command::new(harness::binary())
        .args(["serve", "--dry-run"])
        .env("BRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("BRIDGE_OPS_LISTEN", format!("127.0.0.1:{ops_port}"))
        .env("BRIDGE_DATA_DIR", dir.join("data"))
        .env("BRIDGE_CURRENTS_TOKENS", TOKEN)
        .env("BRIDGE_TLS_CERT_FILE", &cert_file)
        .env("BRIDGE_TLS_KEY_FILE", &key_file)
        .env_remove("BRIDGE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ops_address = format!("127.0.0.1:{ops_port}");
    let ready = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = get(&ops_address, "/readyz") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
    .await
    .unwrap();
    assert!(ready, "serve never became ready");

    let trusts_first = client_trusting(&first_cert);
    assert_eq!(post(&trusts_first, port, "tls-1").await.unwrap(), 200);
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/currents"))
        .bearer_auth(TOKEN)
        .body(batch(&["plain".to_owned()]))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // Renewal: new files in place; new connections get the new certificate.
    let (second_cert, second_key) = self_signed("second");
    std::fs::write(&key_file, &second_key).unwrap();
    std::fs::write(&cert_file, &second_cert).unwrap();
    let trusts_second = client_trusting(&second_cert);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(200) = post(&trusts_second, port, "tls-2").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        post(&client_trusting(&first_cert), port, "tls-3")
            .await
            .is_err()
    );
    let _ = child.kill();
    let _ = child.wait();
}
