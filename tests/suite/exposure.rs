//! Who can reach `gcmspec serve`: loopback unless told otherwise, a control API that a web
//! page cannot drive and that a token can close, keys no one can predict, and a certificate
//! file no one else can plant or read, gone when the server stops.

use std::io::{Read, Write};

use libtest_mimic::Trial;

use crate::cli::{Served, expect, gcmspec};
use crate::trial;

/// A raw HTTP exchange: status and body.
fn raw(url: &str, request: &str) -> Result<(u16, String), String> {
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(request.replace("HOST", host).as_bytes()).map_err(|e| e.to_string())?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

fn post(host: &str, content_type: &str, extra: &str) -> String {
    format!(
        "POST /_gcmspec/v1/senders HTTP/1.1\r\nhost: {host}\r\ncontent-type: {content_type}\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
}

fn only_loopback_without_a_flag() -> Result<(), String> {
    expect(&["serve", "--http", "0.0.0.0:0"], 2, &["refusing to listen on 0.0.0.0:0", "--allow-remote"])?;
    expect(&["serve", "--http", "127.0.0.1:0", "--xmpp", "0.0.0.0:0"], 2, &["refusing to listen on 0.0.0.0:0"])?;
    Ok(())
}

fn a_web_page_cannot_drive_the_control_api() -> Result<(), String> {
    let served = Served::start(&[])?;
    let (status, body) = raw(&served.url, &post("HOST", "application/json", ""))?;
    if status != 201 {
        return Err(format!("a JSON POST from this machine: {status} {body}"));
    }
    let (status, body) = raw(&served.url, &post("HOST", "text/plain", ""))?;
    if status != 415 || !body.contains("application/json") {
        return Err(format!("a text/plain POST (what a page sends cross-origin): {status} {body}"));
    }
    let (status, body) = raw(&served.url, &post("rebound.example:4000", "application/json", ""))?;
    if status != 403 || !body.contains("rebound.example") {
        return Err(format!("a foreign Host (DNS rebinding): {status} {body}"));
    }
    Ok(())
}

fn a_token_closes_the_control_api() -> Result<(), String> {
    let served = Served::start(&["--control-token", "let-me-in"])?;
    let (status, _) = raw(&served.url, &post("HOST", "application/json", ""))?;
    if status != 401 {
        return Err(format!("without the token: {status}"));
    }
    let (status, body) = raw(&served.url, &post("HOST", "application/json", "authorization: Bearer let-me-in\r\n"))?;
    if status != 201 {
        return Err(format!("with the token: {status} {body}"));
    }
    // The harness sends it when told, and without it says the control API is unusable.
    expect(&["run", "--target", &served.url, "--control-token", "let-me-in", "group.member-cap"], 0, &[" 0 failed"])?;
    expect(&["run", "--target", &served.url, "group.member-cap"], 2, &["control API", "401"])?;
    Ok(())
}

fn keys_come_from_the_os_unless_seeded() -> Result<(), String> {
    let (a, b) = (Served::start(&[])?, Served::start(&[])?);
    if a.server_key == b.server_key || a.sender_id == b.sender_id {
        return Err(format!("two servers without --seed gave the same sender: {} {}", a.sender_id, a.server_key));
    }
    let (c, d) = (Served::start(&["--seed", "42"])?, Served::start(&["--seed", "42"])?);
    if c.server_key != d.server_key {
        return Err("the same --seed gave different keys".into());
    }
    Ok(())
}

fn the_certificate_is_private_and_removed(signal: &str) -> Result<(), String> {
    let mut served = Served::start(&["--xmpp-tls", "127.0.0.1:0"])?;
    let cert = std::path::PathBuf::from(&served.certificate);
    let dir = cert.parent().ok_or("no directory")?.to_path_buf();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        if mode(&dir).map_err(|e| e.to_string())? != 0o700 || mode(&cert).map_err(|e| e.to_string())? != 0o600 {
            return Err(format!("{} is readable by others", cert.display()));
        }
    }
    if !served.signal(signal) {
        return Err(format!("serve did not stop on SIG{signal}"));
    }
    if cert.exists() || dir.exists() {
        return Err(format!("{} is still there after the server stopped", cert.display()));
    }
    Ok(())
}

fn the_banner_says_what_is_served() -> Result<(), String> {
    let (code, out) = gcmspec(&["serve", "--help"])?;
    if code != 0 || !out.contains("--allow-remote") || !out.contains("--control-token") {
        return Err(format!("serve --help: exit {code}"));
    }
    Ok(())
}

/// The banner's line about the journal, as `serve` with `extra` prints it.
fn journal_line(extra: &[&str]) -> Result<String, String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gcmspec"))
        .args(["serve", "--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let mut found = Err("no banner line about app servers within 20 s".to_string());
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(20)) {
        if line.starts_with("app servers") {
            found = Ok(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found
}

fn the_banner_says_whether_app_servers_are_judged() -> Result<(), String> {
    let judged = journal_line(&[])?;
    let not = journal_line(&["--max-journals", "0"])?;
    if !judged.contains("journaled and graded") || !not.contains("not journaled") || not.contains("/verdicts") {
        return Err(format!("banner lines: {judged:?} / {not:?}"));
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("exposure::only-loopback-without-a-flag", only_loopback_without_a_flag),
        trial("exposure::a-web-page-cannot-drive-the-control-api", a_web_page_cannot_drive_the_control_api),
        trial("exposure::a-token-closes-the-control-api", a_token_closes_the_control_api),
        trial("exposure::keys-come-from-the-os-unless-seeded", keys_come_from_the_os_unless_seeded),
        trial("exposure::the-certificate-is-private-and-removed", || the_certificate_is_private_and_removed("TERM")),
        trial("exposure::the-certificate-is-removed-on-sighup", || the_certificate_is_private_and_removed("HUP")),
        trial("exposure::serve-help-names-the-guards", the_banner_says_what_is_served),
        trial(
            "exposure::the-banner-says-whether-app-servers-are-judged",
            the_banner_says_whether_app_servers_are_judged,
        ),
    ]
}
