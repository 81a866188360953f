//! XMPP throughput of the reference: acked downstream messages per second, on one
//! connection and on several, each pipelining a full window of pending messages.
//!
//! `cargo bench --bench xmpp` (a release build). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use gcmspec::driver::xmpp::{Auth, XmppClient};
use gcmspec::reference::{Config, Reference};
use serde_json::json;

const MESSAGES_PER_CONNECTION: usize = 20_000;

fn run(connections: usize) -> f64 {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(Reference::start_with(Config::bundled())).expect("bind");
    let window = Config::bundled().limits.max_pending_per_connection;
    let (sender, phone) = server.reference().with_model(|m| {
        let s = m.create_sender();
        let phone = m.register_instance(vec![s.sender_id.clone()], None);
        (s, phone)
    });
    let addr = server.xmpp_address();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..connections {
            let (sender, phone) = (&sender, &phone);
            scope.spawn(move || {
                let (client, auth) = XmppClient::connect(addr, None, &sender.sender_id, &sender.server_key, Duration::from_secs(10)).expect("connect");
                assert_eq!(auth, Auth::Success);
                let mut client = client.expect("logged in");
                let (mut sent, mut acked) = (0, 0);
                while acked < MESSAGES_PER_CONNECTION {
                    // Keep a full window in flight, as a busy app server would.
                    while sent < MESSAGES_PER_CONNECTION && sent - acked < window {
                        let m = json!({"to": phone, "message_id": format!("c{c}-{sent}"), "time_to_live": 0, "data": {"n": sent.to_string()}});
                        client.send_gcm(&format!("s{sent}"), &m).expect("send");
                        sent += 1;
                    }
                    let answer = client.next_as_json().expect("an answer");
                    assert_eq!(answer["message_type"], "ack", "{answer}");
                    acked += 1;
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    (connections * MESSAGES_PER_CONNECTION) as f64 / elapsed
}

fn main() {
    println!(
        "XMPP downstream to one token, time_to_live 0, {MESSAGES_PER_CONNECTION} messages per connection, full window in flight"
    );
    for connections in [1, 2, 4, 8] {
        println!("{connections} connection(s): {:>9.0} acked messages/s", run(connections));
    }
}
