//! gcmspec: a conformance harness and reference server for the legacy GCM/FCM protocol,
//! centred on device groups.
//!
//! # Layout
//!
//! - [`catalog`]: the rules in `specs/*.toml`, loaded purely (text in, [`catalog::Catalog`] or
//!   every error out). [`bundled`] supplies the files compiled into the binary, or reads a
//!   directory.
//! - [`reference`](mod@reference): the reference server. [`reference::model`] is a synchronous state
//!   machine over an injected clock (one per sender) and seeded randomness, with
//!   [`reference::lifetime`] holding each device's queue (connectivity, collapse keys,
//!   storage limits, time to live, throttling); [`reference::http`] is the thin
//!   HTTP adapter; [`reference::control`] the control API a harness drives it with;
//!   [`reference::faults`] one deliberate bug per rule. [`reference::serve`] takes a
//!   listener and a shutdown signal; [`reference::Reference::start`] runs it on an
//!   ephemeral port inside a test.
//!   [`reference::xmpp`] is the XMPP connection server over the same model, whose own state
//!   (connections, unacked messages, queues) is [`reference::ccs`].
//! - [`wire`]: an HTTP exchange as plain data, shared by the adapter and the targets;
//!   [`xmpp`](mod@xmpp): the XMPP wire format (stanza parser), shared likewise.
//! - [`driver`]: the one interface the harness reaches servers through, in-process or over
//!   HTTP and XMPP, the typed control-API client on top of it, and an XMPP client.
//! - [`tls`]: direct TLS for the XMPP endpoint, server and client side.
//! - [`harness`]: rules -> libtest-mimic trials: scenarios, proptest properties, insta
//!   snapshots of normalized responses, and the self-test that proves each rule bites; what
//!   each check saw ([`harness::evidence`]), graded reports (JSON, JUnit, [`harness::html`]),
//!   replay files ([`harness::replay`]) and differential runs ([`harness::diff`]).
//!
//! The `gcmspec` binary (`src/main.rs`, a module per command in `src/cli/`) is a thin CLI over
//! these.

pub mod appserver;
pub mod bundled;
pub mod catalog;
pub mod driver;
pub mod harness;
pub mod reference;
pub mod tls;
pub mod verdicts;
pub mod wire;
pub mod xmpp;

pub use reference::{Reference, RunningReference};

/// docs/app-servers.md: judging app servers with the reference's journal and verdicts (its
/// Rust example runs as a doctest).
#[doc = include_str!("../docs/app-servers.md")]
pub mod app_servers_guide {}
