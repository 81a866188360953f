//! What a failure says, read as a user reads it: which side of a bound a probe was on and
//! where its value went (a field sent, the clock moved); what an outcome meant for the other
//! side means, not the template's variable; what the classes of a normalized answer's `error`
//! stand for and the server's own code (so that a wrong code does not read as a matter of
//! case); an XMPP exchange without an HTTP status; the spec file of a failed step; one
//! mistake (a value of the wrong type) behind many failures, named once in the summary.

use libtest_mimic::Trial;

use crate::cli::expect;
use crate::trial;

/// A run of the in-process reference with `fault`, of the checks `filter` names: it fails,
/// and says each of `needles`.
fn faulted(fault: &str, filter: &str, needles: &[&str]) -> Result<(), String> {
    expect(&["run", "--no-snapshots", "--no-replays", "--fault", fault, filter], 1, needles)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("failure-messages::a-probe-says-which-side-of-its-bound", || {
            faulted(
                "lifetime.ttl.range",
                "lifetime.ttl.range::at-the-bound",
                &[
                    "round 3 of 3 (max_ttl_seconds is 2419200: this round probes 2419201, one past it, in step 3's send.data.ttl and send.time_to_live)",
                    // Not the template's `${over}`: what an outcome meant for the other side means.
                    "this outcome is one for a value within the bound, and this round's value is one past it",
                ],
            )
        }),
        trial("failure-messages::a-probe-says-where-its-value-went", || {
            // Not sent: the clock moved by it, which the failure says in so many words.
            faulted(
                "lifetime.ttl.default",
                "lifetime.ttl.default::kept-four-weeks",
                &[
                    "(default_ttl_seconds is 2419200: this round probes 2419199, one below it, in step 5's advance_clock.seconds)",
                ],
            )
        }),
        trial("failure-messages::an-error-class-says-what-it-stands-for", || {
            faulted(
                "send.errors.registration",
                "send.errors.registration",
                &[
                    "in its normalized answer (the server's error code: InvalidRegistration): at `/error`: expected \"unregistered\", found \"bad-registration\"",
                    // The step's spec file, with its line.
                    "(send-protocol.toml line ",
                    "unregistered = NotRegistered over HTTP, DEVICE_UNREGISTERED over XMPP",
                    "any other code is kept as the server gave it",
                ],
            )
        }),
        trial("failure-messages::one-mistake-behind-many-failures-is-named-once", || {
            // Counts written as strings fail checks of several rules, each saying so in one
            // form, and the summary counts them under that one cause.
            faulted(
                "send.response.format:counts-as-text",
                ".", // every check: the cause spans rules
                &[
                    "at `/success`: expected 1, found \"1\" (`/success` is a string, not a number)",
                    "share one cause: `/success` is a string, not a number (fix it first",
                ],
            )
        }),
        trial("failure-messages::an-xmpp-exchange-reads-as-one", || {
            faulted(
                "lifetime.ttl.range",
                "lifetime.ttl.range::at-the-bound@xmpp",
                &["  sent over XMPP (", "  received: {"],
            )
        }),
    ]
}
