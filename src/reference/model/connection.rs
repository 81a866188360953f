//! The model's side of the XMPP connection server (seed 003): what each app server's
//! connections are owed (acks, nacks, upstream messages, delivery receipts) and flow control.

use super::*;

impl Model {
    /// Delivery receipts for what a device (`Some`) or every device just took go to their
    /// senders' app servers. One device is looked at when only one could have changed: a
    /// long-lived server must not pay for all its devices on every delivery.
    pub(super) fn collect_receipts(&mut self, only: Option<&str>) {
        let mut receipts = Vec::new();
        let mut take = |id: &str, inst: &mut Instance| {
            let package = inst.package().map(str::to_string);
            for (sender, original, at) in inst.traffic_mut().receipts.drain(..) {
                receipts.push((sender, original, id.to_string(), package.clone(), at));
            }
        };
        match only {
            Some(id) => match self.instances.get_mut(id) {
                Some(inst) if !inst.traffic().receipts.is_empty() => take(id, inst),
                _ => return,
            },
            None => self.instances.iter_mut().for_each(|(id, inst)| take(id, inst)),
        }
        let max = self.pending_limit();
        for (sender, original, device, package, at) in receipts {
            let message_id = format!("dr2:{original}");
            let mut data = json!({
                "message_status": "MESSAGE_SENT_TO_DEVICE",
                "original_message_id": original,
                "device_registration_id": device,
                "message_sent_timestamp": at.to_string(),
            });
            if self.fault(Fault::XmppReceipt) {
                data.as_object_mut().expect("an object").remove("original_message_id");
            }
            let json = json!({
                "message_type": "receipt",
                "message_id": message_id,
                "from": crate::xmpp::DOMAIN,
                "category": package.unwrap_or_default(),
                "data": data,
            });
            self.ccs.enqueue(&sender, ForAppServer { message_id, json }, max);
        }
    }

    // ---- the connection server (XMPP) -----------------------------------------------

    pub(super) fn pending_limit(&self) -> usize {
        if self.fault(Fault::XmppFlowControl) { usize::MAX } else { self.limits.max_pending_per_connection }
    }

    pub fn ccs_generation(&self) -> u64 {
        self.ccs.generation()
    }

    pub fn ccs_connect(&mut self, sender: &str) -> u64 {
        let max = self.pending_limit();
        self.ccs.connect(sender, max)
    }

    pub fn ccs_disconnect(&mut self, conn: u64) {
        let max = self.pending_limit();
        let forget = self.fault(Fault::XmppResend);
        self.ccs.disconnect(conn, max, forget);
    }

    pub fn ccs_ack(&mut self, conn: u64, message_id: &str) -> Result<(), AckError> {
        if self.fault(Fault::XmppDrainingInFlight) && self.ccs.is_draining(conn) {
            return Err(AckError::Unknown(message_id.to_string()));
        }
        let max = self.pending_limit();
        let anywhere = self.fault(Fault::XmppOwnConnection);
        let remember = self.fault(Fault::XmppAtLeastOnce);
        self.ccs.ack(conn, message_id, max, anywhere, remember)
    }

    pub fn ccs_take(&mut self, conn: u64) -> Vec<Value> {
        self.ccs.take_outbox(conn)
    }

    /// The XMPP connections open now.
    pub fn ccs_connections(&self) -> Vec<u64> {
        self.ccs.connections()
    }

    /// Each XMPP connection with its sender.
    pub fn ccs_senders(&self) -> Vec<(u64, String)> {
        self.ccs.senders()
    }

    pub fn ccs_is_draining(&self, conn: u64) -> bool {
        self.ccs.is_draining(conn)
    }

    /// Tells the sender's XMPP connections to drain; `None` for an unknown sender.
    pub fn drain(&mut self, sender: &str) -> Option<usize> {
        let tell = !self.fault(Fault::XmppDraining);
        self.senders.contains_key(sender).then(|| self.ccs.drain(sender, tell))
    }

    /// A device sends upstream to its app server (`<sender id>@gcm.googleapis.com`).
    pub fn upstream_to_app_server(
        &mut self,
        registration_id: &str,
        sender: &str,
        data: Option<Value>,
        message_id: Option<String>,
    ) -> Result<String, String> {
        let me = self.resolve(registration_id).to_string();
        let inst = self
            .instances
            .get(me.as_str())
            .ok_or_else(|| format!("no app instance with registration id {registration_id:?}"))?;
        if !inst.senders.iter().any(|s| **s == *sender) {
            return Err(format!("the app is not registered for sender {sender}"));
        }
        let category = inst.package().unwrap_or_default().to_string();
        let message_id = match message_id {
            Some(id) => id,
            None => format!("up-{}", self.random_text(12)),
        };
        let mut json =
            json!({ "from": me, "category": category, "message_id": message_id, "data": data.unwrap_or(json!({})) });
        if self.fault(Fault::XmppUpstream) {
            json.as_object_mut().expect("an object").remove("from");
        }
        let max = self.pending_limit();
        self.ccs.enqueue(sender, ForAppServer { message_id: message_id.clone(), json }, max);
        Ok(message_id)
    }
}
