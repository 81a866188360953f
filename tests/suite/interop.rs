//! Real clients against the reference: the `fcm-device-group` crate (device groups, HTTP),
//! npm's `node-gcm`, `fcm-node` and `fcm-push` (sends, HTTP; the last two recognise the 401 by
//! its text, as they did the real service's) and npm's `@xmpp/client` (the XMPP connection server),
//! which `.ci/run` installs with `npm ci` in tests/interop, and PyPI's `python-gcm` (JSON and
//! plain-text sends) and `slixmpp` (a CCS app server), which it installs into
//! tests/interop/.venv.

use fcm_device_group::{FCMDeviceGroup, FCMDeviceGroupClient, NoToken};
use gcmspec::reference::model::SenderCredentials;
use gcmspec::reference::model::{GroupOp, Message, SendOutcome, Target};
use gcmspec::{Reference, RunningReference};
use libtest_mimic::Trial;
use reqwest::header::{HeaderMap, HeaderValue};

use crate::trial;

async fn fcm_device_group_client() -> Result<(), String> {
    let server = Reference::start().await;
    // Set up what a phone would have done, straight on the model: the fake's test API.
    let (sender, phones) = server.reference().with_model(|m| {
        let sender = m.create_sender();
        let phones: Vec<String> = (0..3).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect();
        (sender, phones)
    });
    let mut headers = HeaderMap::new();
    let header = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
    headers.insert("authorization", header(&format!("key={}", sender.server_key))?);
    headers.insert("project_id", header(&sender.sender_id)?);
    let http = reqwest::Client::builder().default_headers(headers).build().map_err(|e| e.to_string())?;
    let client = FCMDeviceGroupClient::with_client(http, format!("{}/gcm/notification", server.url()), NoToken);
    let err = |e: &dyn std::fmt::Debug| format!("{e:?}");

    let group = client.create_group("appUser-Chris".into(), phones[..2].to_vec()).await.map_err(|e| err(&e))?;
    let key = group.notification_key.clone();
    let group = client.add_to_group(group, vec![phones[2].clone()]).await.map_err(|e| err(&e))?;
    let group = client.remove_from_group(group, vec![phones[0].clone()]).await.map_err(|e| err(&e))?;
    let found = client.get_key("appUser-Chris".into()).await.map_err(|e| err(&e))?;
    if found.notification_key != key || group.notification_key != key {
        return Err(format!(
            "keys differ: created {key}, after add/remove {}, looked up {}",
            group.notification_key, found.notification_key
        ));
    }
    // The client parses the reference's error bodies into its typed errors.
    let again = client.create_group("appUser-Chris".into(), phones[..1].to_vec()).await;
    if !matches!(
        again,
        Err(fcm_device_group::error::FCMDeviceGroupsRequestError::BadRequestError(
            fcm_device_group::error::operation_errors::CreateGroupError::AlreadyExists
        ))
    ) {
        return Err(format!("a second create should be AlreadyExists, got {again:?}"));
    }
    let stranger =
        FCMDeviceGroup { notification_key_name: "appUser-Chris".into(), notification_key: "APA91bnope".into() };
    let missing = client.add_to_group(stranger, vec![phones[0].clone()]).await;
    if !matches!(
        missing,
        Err(fcm_device_group::error::FCMDeviceGroupsRequestError::BadRequestError(
            fcm_device_group::error::operation_errors::ChangeGroupMembersError::KeyNotFound
        ))
    ) {
        return Err(format!("an unknown key should be KeyNotFound, got {missing:?}"));
    }
    let outcome = server.reference().with_model(|m| m.send(&sender.sender_id, Target::To(key), Message::default()));
    match outcome {
        SendOutcome::Group { success: 2, failed } if failed.is_empty() => Ok(()),
        other => Err(format!("the group should now have phones 1 and 2: {other:?}")),
    }
}

/// A reference with a sender, two phones and a group of both.
async fn group_fixture() -> Result<(RunningReference, SenderCredentials, Vec<String>, String), String> {
    let server = Reference::start().await;
    let (sender, phones, key) = server.reference().with_model(|m| {
        let sender = m.create_sender();
        let phones: Vec<String> = (0..2).map(|_| m.register_instance(vec![sender.sender_id.clone()], None)).collect();
        let key =
            m.manage_group(&sender.sender_id, GroupOp::Create { name: "appUser-Chris".into(), ids: phones.clone() });
        (sender, phones, key)
    });
    let key = key.map_err(|e| e.to_string())?;
    Ok((server, sender, phones, key))
}

/// Runs a client script (`command`, `args[0]` the script) in `dir` off the async runtime,
/// and reads the one JSON line it prints; a failure carries what it said on stderr.
async fn run_client(
    mut command: std::process::Command,
    dir: std::path::PathBuf,
    args: Vec<String>,
) -> Result<serde_json::Value, String> {
    let script = args.first().cloned().unwrap_or_default();
    let run = tokio::task::spawn_blocking(move || command.current_dir(&dir).args(&args).output());
    let out = run.await.map_err(|e| e.to_string())?.map_err(|e| format!("running {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn node_gcm(dir: std::path::PathBuf) -> Result<(), String> {
    let (server, sender, phones, key) = group_fixture().await?;
    let args = vec![
        "node-gcm.js".to_string(),
        server.url(),
        sender.server_key.clone(),
        phones[0].clone(),
        phones[1].clone(),
        key,
    ];
    let v = run_client(std::process::Command::new("node"), dir, args).await?;
    let tokens = &v["tokens"];
    let ok = tokens["success"] == 2
        && tokens["failure"] == 1
        && tokens["results"][2]["error"] == "InvalidRegistration"
        && tokens["multicast_id"].is_number();
    if !ok || v["group"] != serde_json::json!({"success": 2, "failure": 0}) {
        return Err(format!("unexpected responses through node-gcm: {v}"));
    }
    for phone in &phones {
        let got = server.reference().with_model(|m| m.inbox(phone).map(|i| i.to_vec())).unwrap_or_default();
        let direct = got
            .iter()
            .any(|d| d.collapse_key.as_deref() == Some("score") && d.data == Some(serde_json::json!({"score": "3:1"})));
        let group = got.iter().any(|d| d.data == Some(serde_json::json!({"hello": "group"})));
        if !(direct && group) {
            return Err(format!("{phone} should have the direct and the group message: {got:?}"));
        }
    }
    Ok(())
}

/// npm's fcm-node and fcm-push: a wrong key is their NotAuthorizedError (they know the real
/// service's 401 page by its text), the right one sends.
async fn fcm_clients(dir: std::path::PathBuf) -> Result<(), String> {
    let server = Reference::start().await;
    let (sender, phone) = server.reference().with_model(|m| {
        let sender = m.create_sender();
        let phone = m.register_instance(vec![sender.sender_id.clone()], None);
        (sender, phone)
    });
    let args = vec!["fcm-clients.js".to_string(), server.url(), sender.server_key.clone(), phone.clone()];
    let v = run_client(std::process::Command::new("node"), dir, args).await?;
    for client in ["fcm_node", "fcm_push"] {
        let (wrong, right) = (&v[client]["wrong"], &v[client]["right"]);
        if wrong["err"] != "NotAuthorizedError" {
            return Err(format!("{client} should report a wrong key as NotAuthorizedError: {v}"));
        }
        if !right["err"].is_null() || !right["id"].as_str().is_some_and(|id| id.contains("multicast_id")) {
            return Err(format!("{client} should send with the right key: {v}"));
        }
    }
    let got = server.reference().with_model(|m| m.inbox(&phone).map(|i| i.len())).unwrap_or_default();
    if got != 2 {
        return Err(format!("the phone should have one message from each client, has {got}: {v}"));
    }
    Ok(())
}

async fn xmpp_client(dir: std::path::PathBuf) -> Result<(), String> {
    xmpp_client_over(dir, false).await
}

async fn xmpp_client_tls(dir: std::path::PathBuf) -> Result<(), String> {
    xmpp_client_over(dir, true).await
}

async fn xmpp_client_over(dir: std::path::PathBuf, tls: bool) -> Result<(), String> {
    let (server, sender, phones, key) = group_fixture().await?;
    let address = if tls { server.xmpp_tls_address() } else { server.xmpp_address() };
    let mut args = vec![
        "xmpp-client.mjs".to_string(),
        address.to_string(),
        sender.sender_id.clone(),
        sender.server_key.clone(),
        phones[0].clone(),
        key.clone(),
    ];
    let ca = std::env::temp_dir().join(format!("gcmspec-interop-{}.pem", address.port()));
    if tls {
        std::fs::write(&ca, server.certificate_pem()).map_err(|e| e.to_string())?;
        args.push("tls".into());
    }
    let node = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new("node");
        if tls {
            // The generated certificate is the one Node must trust.
            command.env("NODE_EXTRA_CA_CERTS", &ca);
        }
        command.current_dir(&dir).args(&args).output()
    });
    let out = node.await.map_err(|e| e.to_string())?.map_err(|e| format!("running node: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xmpp-client.mjs failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    let token_ack = &v["m-token"];
    let group_ack = &v["m-group"];
    if token_ack["message_type"] != "ack"
        || token_ack["from"] != phones[0].as_str()
        || group_ack["message_type"] != "ack"
        || group_ack["success"] != 2
    {
        return Err(format!("unexpected answers through @xmpp/client: {v}"));
    }
    let got = server.reference().with_model(|m| m.inbox(&phones[0]).map(|i| i.to_vec())).unwrap_or_default();
    if got.len() != 2 {
        return Err(format!("{} should have the direct and the group message: {got:?}", phones[0]));
    }
    Ok(())
}

/// PyPI's python-gcm: JSON and plain-text sends, canonical ids, NotRegistered, a wrong key.
async fn python_gcm(dir: std::path::PathBuf) -> Result<(), String> {
    let server = Reference::start().await;
    let (sender, token, old, canonical, gone) = server.reference().with_model(|m| {
        let sender = m.create_sender();
        let mut phone = || m.register_instance(vec![sender.sender_id.clone()], None);
        let (token, old, gone) = (phone(), phone(), phone());
        let canonical = m.reregister(&old).unwrap_or_default();
        m.unregister(&gone);
        (sender, token, old, canonical, gone)
    });
    let args = [
        "python/gcm_client.py".to_string(),
        server.url(),
        sender.server_key.clone(),
        token.clone(),
        old.clone(),
        canonical.clone(),
        gone.clone(),
    ];
    let python = std::process::Command::new(dir.join(".venv/bin/python"));
    let v = run_client(python, dir, args.to_vec()).await?;
    let expected = serde_json::json!({
        "json": { "success": { token.as_str(): true, old.as_str(): true }, "canonical": { old.as_str(): canonical } },
        "json_gone": { "errors": { "NotRegistered": [gone] } },
        "plaintext": null,
        "plaintext_canonical": canonical,
        "plaintext_gone": "NotRegistered",
        "wrong_key": "AuthenticationException",
    });
    // python-gcm reports successes as {id: message id}: the ids are checked, not the values.
    let mut got = v.clone();
    if let Some(success) = got["json"]["success"].as_object_mut() {
        success.values_mut().for_each(|m| *m = serde_json::Value::Bool(m.is_string()));
    }
    if got != expected {
        return Err(format!("python-gcm saw:\n{v:#}\nexpected (successes as true):\n{expected:#}"));
    }
    let received = server.reference().with_model(|m| m.inbox(&token).map(<[_]>::to_vec)).unwrap_or_default();
    if received.len() != 2 || received[1].collapse_key.as_deref() != Some("score") {
        return Err(format!("the token should have the JSON send and the plain-text one: {received:?}"));
    }
    Ok(())
}

/// PyPI's slixmpp as a CCS app server: login, ack, nack, group ack, upstream and its ack,
/// a receipt and its ack, draining.
async fn slixmpp_app_server(dir: std::path::PathBuf) -> Result<(), String> {
    let (server, sender, phones, key) = group_fixture().await?;
    let offline = server.reference().with_model(|m| {
        let id = m.register_instance(vec![sender.sender_id.clone()], None);
        m.set_connectivity(&id, gcmspec::reference::model::Connectivity::Offline);
        id
    });
    let xmpp = server.xmpp_address();
    let args = [
        "python/ccs_app_server.py".to_string(),
        server.url(),
        xmpp.ip().to_string(),
        xmpp.port().to_string(),
        sender.sender_id.clone(),
        sender.server_key.clone(),
        phones[0].clone(),
        offline.clone(),
        key.clone(),
    ];
    let python = std::process::Command::new(dir.join(".venv/bin/python"));
    let v = run_client(python, dir, args.to_vec()).await?;
    let checks = [
        ("ack", v["ack"]["message_type"] == "ack" && v["ack"]["message_id"] == "m-ack"),
        ("nack", v["nack"]["message_type"] == "nack" && v["nack"]["error"] == "BAD_REGISTRATION"),
        (
            "group ack",
            v["group_ack"]["message_type"] == "ack"
                && v["group_ack"]["from"] == key.as_str()
                && v["group_ack"]["success"] == 2,
        ),
        ("upstream", v["upstream"]["from"] == phones[0].as_str() && v["upstream"]["data"]["hello"] == "server"),
        ("receipt's ack", v["receipt_ack"]["message_type"] == "ack"),
        (
            "receipt",
            v["receipt"]["message_type"] == "receipt"
                && v["receipt"]["message_id"] == "dr2:m-receipt"
                && v["receipt"]["data"]["device_registration_id"] == offline.as_str(),
        ),
        ("draining", v["control"]["control_type"] == "CONNECTION_DRAINING"),
    ];
    let wrong: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(what, _)| *what).collect();
    if !wrong.is_empty() {
        return Err(format!("slixmpp saw wrong {wrong:?}:\n{v:#}"));
    }
    Ok(())
}

/// A trial that runs a Python client from tests/interop/python with the interpreter of
/// tests/interop/.venv: skipped (not failed) outside CI when that is not there, required in CI.
fn python_trial<F: std::future::Future<Output = Result<(), String>> + 'static>(
    name: &str,
    run: fn(std::path::PathBuf) -> F,
) -> Trial {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let installed = dir.join(".venv/bin/python").exists();
    let t = trial(name, move || {
        if !installed {
            return Err("no tests/interop/.venv: `python3 -m venv tests/interop/.venv` and \
                        `tests/interop/.venv/bin/pip install -r tests/interop/python/requirements.txt` (.ci/run does)"
                .into());
        }
        crate::block_on(run(dir))
    });
    t.with_ignored_flag(!installed && std::env::var_os("CI").is_none())
}

/// A trial that runs a Node client from tests/interop: skipped (not failed) outside CI when
/// `npm ci` has not been run there, required in CI.
fn node_trial<F: std::future::Future<Output = Result<(), String>> + 'static>(
    name: &str,
    package: &str,
    run: fn(std::path::PathBuf) -> F,
) -> Trial {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let installed = dir.join("node_modules").join(package).is_dir();
    let package = package.to_string();
    let t = trial(name, move || {
        if !installed {
            return Err(format!("npm's {package} is not installed: run `npm ci` in tests/interop (.ci/run does)"));
        }
        crate::block_on(run(dir))
    });
    t.with_ignored_flag(!installed && std::env::var_os("CI").is_none())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("interop::fcm-device-group::create-add-remove-lookup", || crate::block_on(fcm_device_group_client())),
        node_trial("interop::node-gcm::send-to-tokens-and-notification-key", "node-gcm", node_gcm),
        node_trial("interop::fcm-node-and-fcm-push::recognise-a-wrong-key", "fcm-push", fcm_clients),
        node_trial("interop::xmpp-client::login-and-send", "@xmpp/client", xmpp_client),
        node_trial("interop::xmpp-client::login-and-send-over-tls", "@xmpp/client", xmpp_client_tls),
        python_trial("interop::python-gcm::json-and-plain-text-sends", python_gcm),
        python_trial("interop::slixmpp::ccs-app-server", slixmpp_app_server),
    ]
}
