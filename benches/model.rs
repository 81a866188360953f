//! What a clock advance costs the model as instances pile up: it should grow with the
//! messages waiting, not with the instances registered.
//!
//! `cargo bench --bench model` (a release build). Prints figures; asserts nothing about speed.

use std::time::Instant;

use gcmspec::reference::model::{Message, Target};
use gcmspec::{Reference, reference::Config};

fn main() {
    for registered in [1_000usize, 200_000] {
        let reference = Reference::new(Config::bundled());
        let (sender, waiting) = reference.with_model(|m| {
            let sender = m.create_sender().sender_id;
            let ids: Vec<String> = (0..registered).map(|_| m.register_instance(vec![sender.clone()], None)).collect();
            // Ten devices offline with a message each: what an advance may have to move.
            for id in &ids[..10] {
                m.set_connectivity(id, gcmspec::reference::model::Connectivity::Offline);
                m.send(&sender, Target::To(id.clone()), Message { time_to_live: Some(3600), ..Message::default() });
            }
            (sender, ids.len())
        });
        const ADVANCES: u32 = 200;
        let start = Instant::now();
        reference.with_model(|m| {
            for _ in 0..ADVANCES {
                m.advance_clock(&sender, 1);
            }
        });
        let each = start.elapsed() / ADVANCES;
        println!("clock advance with {waiting:>7} instances registered, 10 with a message waiting: {each:?} each");
    }
}
