//! A real device-group client from crates.io against the reference over HTTP.

use fcm_device_group::{FCMDeviceGroup, FCMDeviceGroupClient, NoToken};
use gcmspec::Reference;
use gcmspec::reference::model::{Message, SendOutcome, Target};
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

pub fn trials() -> Vec<Trial> {
    vec![trial("interop::fcm-device-group::create-add-remove-lookup", || crate::block_on(fcm_device_group_client()))]
}
