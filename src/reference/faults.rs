//! Deliberate bugs, so that the suite can be shown to catch each of them, and legal
//! variants, so that it can be shown to pass servers that differ from the reference only
//! where the documents allow.
//!
//! A fault is named by the id of the rule it breaks: the rule's designed fault by the id
//! alone (`group.member-cap`), further faults modelled on how real servers break the rule
//! as `rule-id:what` (`group.member-cap:client-add`). `gcmspec selftest` runs each fault's
//! rule against the reference with that fault on and expects a check to fail.
//!
//! A variant is a behaviour the documents allow that the reference does not choose by
//! default (other throttle buckets, discarding on reaching the storage limit, ...).
//! `gcmspec selftest` runs the whole suite against each and expects every check to pass.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use super::generated::{Generated, Off, WrongUnit};
use crate::catalog::Path;

macro_rules! faults {
    (@name $id:literal) => { $id };
    (@name $id:literal, $name:literal) => { concat!($id, ":", $name) };
    ($($variant:ident => $id:literal $(/ $name:literal)?: $what:literal,)*) => {
        /// A rule the reference can be told to break.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Fault { $($variant,)* }

        impl Fault {
            pub const ALL: &'static [Fault] = &[$(Fault::$variant,)*];

            /// The id of the rule this fault breaks.
            pub fn rule_id(self) -> &'static str {
                match self { $(Fault::$variant => $id,)* }
            }

            /// The fault's name: its rule's id, with `:what` for a fault beyond the designed one.
            pub fn name(self) -> &'static str {
                match self { $(Fault::$variant => faults!(@name $id $(, $name)?),)* }
            }

            /// What the broken reference does instead.
            pub fn description(self) -> &'static str {
                match self { $(Fault::$variant => $what,)* }
            }
        }
    };
}

faults! {
    CreateReturnsKey => "group.create.returns-key": "answers a create with an empty JSON object",
    ServerKeyAuth => "group.auth.server-key": "accepts group operations without a valid server key",
    ProjectIdHeader => "group.auth.project-id": "ignores the project_id header",
    NameUnique => "group.name.unique": "a second create with a used name replaces the group",
    NamePerSender => "group.name.per-sender": "names are global: another sender cannot reuse one",
    KeyUnique => "group.key.unique": "mints one notification key per sender, so a second group takes over the first one's key",
    KeyUnguessable => "group.key.unguessable": "mints notification keys from a counter",
    MemberCap => "group.member-cap": "allows one member more than the cap",
    MemberCapHalfApplied => "group.member-cap" / "half-applied-add": "refuses an add past the cap, but only after adding the ids that still fit",
    AddMembers => "group.add.members": "answers add without adding",
    AddMembersOtherKey => "group.add.members" / "other-key": "answers an add with a fresh key that names no group",
    AddMembersNameAsKey => "group.add.members" / "name-as-key": "answers an add with the group's name as its notification_key",
    AddMembersRekeyed => "group.add.members" / "rekeyed": "mints a new notification_key on every add: the group moves to it, and the key the app server saved stops working",
    RemoveMembers => "group.remove.members": "answers remove without removing",
    RemoveMembersOtherKey => "group.remove.members" / "other-key": "answers a remove with a fresh key that names no group",
    RemoveMembersAll => "group.remove.members" / "removes-all": "a remove takes every member out, not just the ids given",
    NameOptional => "group.name.optional": "refuses add and remove without notification_key_name",
    NameMatchesKey => "group.name.matches-key": "ignores a notification_key_name that names another group",
    KeyNotFound => "group.key.not-found": "answers add to an unknown key with 200",
    Lookup => "group.lookup": "answers every lookup with \"notification_key not found\"",
    InvalidIdsDropped => "group.create.invalid-ids": "keeps unknown registration ids as members",
    RemoveLastDeletes => "group.remove.last-deletes": "keeps a group after its last member is removed",
    MalformedGroupRequest => "group.request.malformed": "treats an unknown operation as create",
    ClientAddCreates => "client.add.creates-group": "client add to a new name answers \"notification_key not found\"",
    ClientNoCreate => "client.create.refused": "accepts create on the client endpoint",
    ClientSingleId => "client.add.single-id": "accepts several registration ids in a client request",
    ClientSingleIdRemove => "client.add.single-id" / "remove": "checks for one registration id on client adds only: a remove takes several",
    ClientSingleIdFirstOnly => "client.add.single-id" / "first-id-only": "takes the first registration id of a client request, ignores the rest and answers 200",
    ClientRequired => "client.request.required": "takes the project from the id_token when project_id is missing",
    ClientRequiredName => "client.request.required" / "name-optional": "takes a client add or remove without notification_key_name, naming the group after the account",
    ClientIdToken => "client.auth.id-token": "does not verify the id_token",
    ClientAccountScope => "client.auth.account-scope": "lets any account change any group",
    ClientRemove => "client.remove.members": "answers client remove without removing",
    SendSuccess => "send.group.success": "omits `failure` when every member succeeded",
    SendFanOut => "send.group.fan-out": "delivers a group message to the first member only",
    SendPartial => "send.group.partial": "omits failed_registration_ids on partial failure",
    SendPartialCountsOnly => "send.group.partial" / "counts-only": "answers a partial failure with the right counts, but delivers to no member",
    SendPartialInverted => "send.group.partial" / "inverted": "lists the members it reached in failed_registration_ids, not those it missed",
    SendAllFailed => "send.group.all-failed": "answers 200 with counts when every member failed",
    SendAllFailedOtherCauses => "send.group.all-failed" / "other-causes": "answers 503 only when every member is unregistered: a group whose every member refuses the message for another reason (its package) gets 200 with counts",
    SendAllFailedStanzaError => "send.group.all-failed" / "xmpp-stanza-error": "answers an XMPP group send that reached no member with a stanza-level error, not a nack",
    SendAuth => "send.auth.server-key": "accepts sends without a valid server key",
    SendMalformed => "send.request.malformed": "answers malformed JSON with 200 and no results",
    PlainText => "send.plain-text": "knows only JSON: refuses a plain-text send as malformed JSON",
    PlainTextJsonAnswer => "send.plain-text" / "json-answer": "answers a plain-text send in JSON",
    PlainTextNoCanonical => "send.plain-text" / "no-canonical-line": "leaves the registration_id line out of a plain-text answer",
    PlainTextDropsData => "send.plain-text" / "drops-data": "delivers a plain-text send without its data.<key> fields",
    Accepted => "lifetime.accepted": "refuses sends to an offline device with Unavailable",
    ConnectedNow => "lifetime.connected.delivered-now": "holds messages for an awake device until its next connectivity change",
    DelayWhileIdle => "lifetime.delay-while-idle": "delivers delay_while_idle messages to an idle device",
    OfflineStored => "lifetime.offline.delivered-on-connect": "keeps holding delay_while_idle messages after the device connects idle",
    CollapseReplaces => "lifetime.collapse-key.replaces": "keeps every stored message of a collapse key",
    CollapseAcrossRegistrations => "lifetime.collapse-key.replaces" / "across-registrations": "collapses by sender and collapse key alone: one device's stored message is replaced by another device's",
    CollapseKeepsOld => "lifetime.collapse-key.replaces" / "keeps-old": "keeps the stored message and drops the newer one with the same collapse key",
    CollapseKeyLimit => "lifetime.collapse-key.limit": "keeps one collapse key fewer than the limit at a time",
    CollapseKeyCountsNoKey => "lifetime.collapse-key.limit" / "counts-no-key": "counts stored messages without a collapse key as one of the keys",
    CollapseKeyEverUsed => "lifetime.collapse-key.limit" / "keys-ever-used": "limits the collapse keys a device has ever been sent, not those stored at once: a fifth key is dropped forever",
    CollapseKeyOverflow => "lifetime.collapse-key.limit" / "unbounded": "stores any number of collapse keys per device",
    StoredLimit => "lifetime.stored-limit": "stores any number of messages and never sends deleted_messages",
    StoredLimitDropsOldest => "lifetime.stored-limit" / "drops-oldest": "past the limit drops only the oldest stored message (and sends deleted_messages)",
    StoredLimitCountsCollapsible => "lifetime.stored-limit" / "counts-collapsible": "counts collapsible messages toward the limit of non-collapsible ones",
    TtlRange => "lifetime.ttl.range": "accepts any time_to_live",
    TtlDefault => "lifetime.ttl.default": "defaults time_to_live to one day",
    TtlExpiry => "lifetime.ttl.expiry": "delivers messages past their time to live",
    TtlZero => "lifetime.ttl.zero": "stores time_to_live 0 messages like any other",
    ThrottleDelays => "lifetime.throttle.delays": "drops messages while the bucket is empty",
    ThrottlePerApplication => "lifetime.throttle.per-application": "throttles an application's messages in one bucket, whatever their collapse key",
    ThrottleTtlZero => "lifetime.throttle.ttl-zero": "throttles time_to_live 0 messages, which drops them",
    ThrottleTtlZeroCollapse => "lifetime.throttle.ttl-zero" / "collapse-key": "throttles time_to_live 0 messages that carry a collapse key",
    ThrottleTtlZeroOwnBucket => "lifetime.throttle.ttl-zero" / "own-bucket": "throttles time_to_live 0 messages in a token bucket of their own",
    CanonicalId => "lifetime.canonical-id": "omits the canonical registration_id",
    Uninstall => "lifetime.uninstall": "never invalidates an uninstalled app's registration",
    MultipleSenders => "lifetime.multiple-senders": "lets only the first sender of a registration send",
    MultipleSendersNoLimit => "lifetime.multiple-senders" / "no-sender-limit": "registers an app for any number of senders, and every one can send",
    MultipleSendersForeignKey => "lifetime.multiple-senders" / "foreign-key": "lets any sender send to another sender's notification key",
    ResponseFormat => "send.response.format": "lists results with the errors last, not in request order, and leaves canonical_ids out",
    ResponseFormatCountsAsText => "send.response.format" / "counts-as-text": "writes success, failure and canonical_ids as strings (\"1\", not 1)",
    TargetExclusive => "send.target.exclusive": "accepts `to` and `registration_ids` together",
    RegistrationIdsLimit => "send.registration-ids.limit": "accepts any number of registration_ids",
    DryRun => "send.dry-run": "delivers dry_run messages",
    DryRunUnvalidated => "send.dry-run" / "unvalidated": "takes any dry_run send without checking the message",
    RestrictedPackage => "send.restricted-package": "ignores restricted_package_name",
    ReservedDataKeys => "send.data.reserved-keys": "accepts reserved data keys",
    ReservedMessageType => "send.data.reserved-message-type": "accepts message_type as a data key",
    PayloadLimit => "send.payload.limit": "accepts data payloads of any size",
    PayloadLimitIos => "send.payload.ios-group": "applies the 4 KB limit to iOS members as well",
    RegistrationErrors => "send.errors.registration": "answers NotRegistered as InvalidRegistration",
    UpstreamFanOut => "group.upstream.fan-out": "delivers a device's upstream group message back to that device too",
    Dismissal => "group.dismissal": "leaves a handled group message in the other members' queues",
    DeliveredOnce => "lifetime.delivered-once": "delivers the last message again when a device reconnects",
    XmppAuth => "xmpp.auth.sasl-plain": "accepts any password for a known sender id",
    XmppFcmDomain => "xmpp.auth.fcm-domain": "knows only `@gcm.googleapis.com`: refuses FCM-era logins and upstream addresses",
    XmppAck => "xmpp.downstream.ack": "acks without echoing the message_id",
    XmppNack => "xmpp.downstream.nack": "acks sends to registration ids that do not exist",
    XmppNackUnlisted => "xmpp.downstream.nack" / "unlisted-code": "nacks with the HTTP API's error codes (InvalidRegistration, NotRegistered), which are not among CCS's",
    XmppBadRequest => "xmpp.stanza.bad-request": "answers a message stanza without a gcm payload with a nack, not a stanza error",
    XmppInvalidJson => "xmpp.json.invalid": "answers nothing to a gcm payload that is not JSON",
    XmppInvalidJsonAcked => "xmpp.json.invalid" / "acked": "acks a gcm payload that is not JSON",
    XmppUpstream => "xmpp.upstream.delivered": "leaves `from` out of upstream messages",
    XmppResend => "xmpp.upstream.resend": "drops unacknowledged upstream messages when a connection closes",
    XmppOwnConnection => "xmpp.ack.own-connection": "accepts an ack on any connection of the sender",
    XmppFlowControl => "xmpp.upstream.flow-control": "sends upstream messages without waiting for acks",
    XmppReceipt => "xmpp.receipt": "leaves original_message_id out of delivery receipts",
    XmppDraining => "xmpp.draining": "drains without telling: no CONNECTION_DRAINING control message",
    XmppDrainingInFlight => "xmpp.draining" / "in-flight-refused": "refuses acks on a draining connection (BAD_ACK), so in-flight messages never complete there",
    XmppDrainingRefusesNew => "xmpp.draining.refuses-new": "keeps accepting downstream messages on a draining connection",
    XmppGroupAck => "xmpp.group.ack": "answers a device-group send from the app server's address, not from the notification key",
    XmppGroupAckNoMessageId => "xmpp.group.ack" / "no-message-id": "leaves message_id out of device-group acks and nacks",
    XmppGroupAckOtherMessageId => "xmpp.group.ack" / "stanza-id": "answers a device-group send with the stanza's id as message_id, not the JSON's",
    XmppAtLeastOnce => "xmpp.upstream.at-least-once": "forgets acks at reconnection: acknowledged messages are sent again",
    XmppPipelined => "xmpp.downstream.pipelined": "refuses downstream messages past half the pending limit on a connection (QUOTA_EXCEEDED)",
}

/// The faults switched on in one reference instance: designed ones, and ones generated from
/// the coverage model ([`super::generated`]).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    designed: Switches<Fault>,
    generated: BTreeSet<Generated>,
}

impl Faults {
    pub fn new(designed: impl IntoIterator<Item = Fault>) -> Faults {
        Faults { designed: Switches::new(designed), generated: BTreeSet::new() }
    }

    pub fn with_generated(mut self, generated: impl IntoIterator<Item = Generated>) -> Faults {
        self.generated.extend(generated);
        self
    }

    /// The designed fault, everywhere.
    pub fn has(&self, f: Fault) -> bool {
        self.designed.has(f)
    }

    /// The designed fault, everywhere or on this path only.
    pub fn on(&self, f: Fault, path: Path) -> bool {
        self.has(f) || self.generated.contains(&Generated::OnPath { fault: f, path })
    }

    /// The designed fault, everywhere or on some path: whether a request must be looked at
    /// further before it is refused.
    pub fn anywhere(&self, f: Fault) -> bool {
        self.has(f) || self.generated.iter().any(|g| matches!(g, Generated::OnPath { fault, .. } if *fault == f))
    }

    /// How far a documented number is taken off (0: not at all).
    pub fn delta(&self, param: &str) -> i64 {
        self.generated
            .iter()
            .map(|g| match g {
                Generated::Limit { param: p, delta, .. } if p == param => *delta,
                _ => 0,
            })
            .sum()
    }

    /// The unit a documented number is wrongly counted in, if it is.
    pub fn unit(&self, param: &str) -> Option<WrongUnit> {
        self.generated.iter().find_map(|g| match g {
            Generated::Unit { param: p, unit, .. } if p == param => Some(*unit),
            _ => None,
        })
    }

    /// Whether a rule's per-device (or per-application) state is shared the wrong way for
    /// this tenancy.
    pub fn scoped(&self, rule: &str, tenancy: Path) -> bool {
        // Asked on every stored message: no allocation to find it off.
        self.generated
            .iter()
            .any(|g| matches!(g, Generated::Scope { rule: r, tenancy: t } if r == rule && *t == tenancy))
    }

    /// Every fault switched on, by name.
    pub fn names(&self) -> Vec<String> {
        self.designed.iter().map(|f| f.name().to_string()).chain(self.generated.iter().map(Generated::name)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.designed.0.is_empty() && self.generated.is_empty()
    }
}

macro_rules! variants {
    ($($variant:ident => $name:literal: $what:literal,)*) => {
        /// A behaviour the documents allow that differs from the reference's default.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Variant { $($variant,)* }

        impl Variant {
            pub const ALL: &'static [Variant] = &[$(Variant::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Variant::$variant => $name,)* }
            }

            /// What the reference does instead of its default, and why the documents allow it.
            pub fn description(self) -> &'static str {
                match self { $(Variant::$variant => $what,)* }
            }
        }
    };
}

variants! {
    UuidKeys => "uuid-keys": "mints notification keys as random UUIDs (122 random bits; the documents give no shape)",
    IosPayloadRefusesSend => "ios-payload-refuses-send": "refuses a whole group send whose payload is too large for its iOS members (400 MessageTooBig), rather than failing those members only",
    DiscardOnReaching => "discard-on-reaching": "discards the stored messages when the limit is reached (the 100th), not when it is passed (the 101st)",
    KeepOldestCollapseKeys => "keep-oldest-collapse-keys": "past the collapse-key limit keeps the oldest keys, dropping the new one",
    Piggyback => "piggyback": "a delivery that is not throttled takes the device's throttled messages with it (\"may be delivered before the time of the next periodic grant, if they are piggybacked\")",
    NewestFirst => "newest-first": "delivers a device's waiting messages newest first (the order of delivery is not guaranteed)",
    SameIdOnReregister => "same-id-on-reregister": "gives an app that registers again the registration id it had (\"GCM may return the same ID or a different ID\")",
    DelayedUnregistration => "delayed-unregistration": "an unregistration takes effect half the propagation window later: until then the id still works",
    SlowUninstall => "slow-uninstall": "keeps an uninstalled app's registration id for the unregistration propagation window after it finds out: sends in between get message ids and are dropped",
    OtherNackCodes => "other-nack-codes": "nacks with other codes where the documents name none: DEVICE_UNREGISTERED for a group send that reached no member, SERVICE_UNAVAILABLE on a draining connection, INVALID_JSON for an ack on the wrong connection",
    SilentBadAck => "silent-bad-ack": "does not answer an ack it does not take (one on the wrong connection): the message just stays unacknowledged",
    InvalidJsonStanzaError => "invalid-json-stanza-error": "answers a gcm payload that is not JSON with a stanza-level bad-request, as for any stanza it cannot parse",
    PlainTextErrors => "plain-text-errors": "answers every 4xx with a text/plain body, not JSON (the documents ask only that the body say why; real servers answered in text)",
    OtherErrorStatuses => "other-error-statuses": "refuses group operations with other 4xx statuses: 404 for an unknown key or name, 409 for a used name or a name that is not the key's, 403 for a client-side create, 422 past the member cap (the documents name none)",
    AlreadyExistsAnswered200 => "already-exists-200": "answers a second create with a used name 200 {\"error\": \"notification_key already exists\"}, as one report saw real servers do",
    OldIdsRetire => "old-ids-retire": "an old registration id stops working (NotRegistered) once its sender's clock has moved on from the re-registration (\"eventually the ID you're using will stop working\")",
    RefusesReadds => "refuses-readds": "refuses (400) an add that lists a device already a member, and a remove that lists one that is not (the documents say nothing of either)",
    RefusesDuplicateIds => "refuses-duplicate-ids": "refuses a group request that lists a registration id twice (400: an invalid field), whatever the group's size",
    PrunesUnregistered => "prunes-unregistered": "drops a member from its groups once a send finds it unregistered (after counting it as failed that once)",
    SmallerThrottleBuckets => "smaller-throttle-buckets": "token buckets of 5 initial tokens, granting 2 every 900 s (the documents give no sizes; declared in capabilities `params`)",
    LargerThrottleBuckets => "larger-throttle-buckets": "token buckets three times as large, granting twice as many tokens twice as often (the documents give no sizes; declared in capabilities `params`)",
}

/// The legal variants switched on in one reference instance.
pub type Variants = Switches<Variant>;

/// Faults and variants alike: named, listed, switched on by name.
pub trait Named: Copy + Ord + 'static {
    const ALL: &'static [Self];
    /// What kind of thing it is, for an error that names no such one.
    const KIND: &'static str;
    fn name(self) -> &'static str;
}

impl Named for Fault {
    const ALL: &'static [Fault] = Fault::ALL;
    const KIND: &'static str = "fault (a rule id, or rule-id:what)";
    fn name(self) -> &'static str {
        Fault::name(self)
    }
}

impl Named for Variant {
    const ALL: &'static [Variant] = Variant::ALL;
    const KIND: &'static str = "legal variant";
    fn name(self) -> &'static str {
        Variant::name(self)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no {kind} is named `{name}` (`gcmspec selftest --list` lists them)")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

fn by_name<T: Named>(s: &str) -> Result<T, UnknownName> {
    T::ALL.iter().copied().find(|t| t.name() == s).ok_or_else(|| UnknownName { kind: T::KIND, name: s.to_string() })
}

impl FromStr for Fault {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(s)
    }
}

impl FromStr for Variant {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(s)
    }
}

/// Which faults, or which variants, are switched on.
#[derive(Debug, Clone)]
pub struct Switches<T>(BTreeSet<T>);

impl<T> Default for Switches<T> {
    fn default() -> Self {
        Switches(BTreeSet::new())
    }
}

impl<T: Named> Switches<T> {
    pub fn new(on: impl IntoIterator<Item = T>) -> Self {
        Switches(on.into_iter().collect())
    }

    pub fn has(&self, t: T) -> bool {
        self.0.contains(&t)
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.0.iter().copied()
    }
}
