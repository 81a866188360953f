// gcmspec driver (docs/client-drivers.md, contract gcmspec-driver/1) for npm's node-gcm:
// makes node-gcm do what `gcmspec client` asks, as an app server would call it, and says
// what node-gcm returned. node-gcm sends JSON to tokens, lists and notification keys; it
// has no device-group management, no plain-text form and no XMPP.
//
// Run: gcmspec client --driver "node tests/interop/drivers/node-gcm.js"
'use strict';
const readline = require('readline');
const gcm = require('node-gcm');
const { version } = require('node-gcm/package.json');

const sender = new gcm.Sender(process.env.GCMSPEC_API_KEY, { uri: `${process.env.GCMSPEC_HTTP_URL}/fcm/send` });
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
// node-gcm logs with console.warn; stdout carries the contract only.
console.log = console.warn;

say({ contract: 'gcmspec-driver/1', library: 'node-gcm', version, supports: ['http', 'multicast', 'group-send'] });

function message(m) {
  const options = { data: m.data || {} };
  if (m.collapse_key !== undefined) options.collapseKey = m.collapse_key;
  if (m.time_to_live !== undefined) options.timeToLive = m.time_to_live;
  return new gcm.Message(options);
}

// node-gcm's callback, with its own retries (5, backing off from 1 s), as a promise.
function send(msg, recipient) {
  return new Promise((resolve, reject) => {
    sender.send(msg, recipient, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// What node-gcm returned, in the contract's shape: results in the order of the tokens.
function returned(response, tokens) {
  const out = { results: [] };
  for (const [i, r] of (response.results || []).entries()) {
    if (tokens[i] === undefined) continue;
    const result = { token: tokens[i] };
    if (r.message_id) result.message_id = String(r.message_id);
    if (r.registration_id) result.canonical = r.registration_id;
    if (r.error) result.error = r.error;
    out.results.push(result);
  }
  if (typeof response.success === 'number') out.success = response.success;
  if (typeof response.failure === 'number') out.failure = response.failure;
  if (Array.isArray(response.failed_registration_ids)) out.failed_tokens = response.failed_registration_ids;
  return out;
}

async function act(req) {
  if (req.op !== 'send') return { unsupported: `node-gcm has no ${req.op}` };
  if (req.via !== 'json') return { unsupported: `node-gcm sends JSON over HTTP only, not ${req.via}` };
  const to = req.to;
  const msg = message(req.message);
  try {
    if (to.token !== undefined) return { returned: returned(await send(msg, { to: to.token }), [to.token]) };
    if (to.tokens !== undefined) {
      return { returned: returned(await send(msg, { registrationTokens: to.tokens }), to.tokens) };
    }
    if (to.notification_key !== undefined) {
      return { returned: returned(await send(msg, { notificationKey: to.notification_key }), []) };
    }
    return { unsupported: 'an addressee node-gcm does not take' };
  } catch (err) {
    return { raised: typeof err === 'object' ? (err.message || JSON.stringify(err)) : String(err) };
  }
}

(async () => {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      say({ id: 0, raised: `not a request: ${e.message}` });
      continue;
    }
    say({ id: req.id, ...(await act(req)) });
  }
})();
