//! What a failure says, read as a user reads it: which side of a bound a probe was on, and
//! what the classes of a normalized answer's `error` stand for (so that a wrong code does not
//! read as a matter of case).

use libtest_mimic::Trial;

use crate::cli::expect;
use crate::trial;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("failure-messages::a-probe-says-which-side-of-its-bound", || {
            expect(
                &[
                    "run",
                    "--no-snapshots",
                    "--no-replays",
                    "--fault",
                    "lifetime.ttl.range",
                    "lifetime.ttl.range::at-the-bound",
                ],
                1,
                &["round 3 of 3 (max_ttl_seconds = 2419201, one past its bound 2419200)"],
            )
        }),
        trial("failure-messages::an-error-class-says-what-it-stands-for", || {
            expect(
                &[
                    "run",
                    "--no-snapshots",
                    "--no-replays",
                    "--fault",
                    "send.errors.registration",
                    "send.errors.registration",
                ],
                1,
                &[
                    "in its normalized answer: at `/error`: expected \"unregistered\", found \"bad-registration\"",
                    "unregistered = NotRegistered or DEVICE_UNREGISTERED",
                    "any other code is kept as the server gave it",
                ],
            )
        }),
    ]
}
