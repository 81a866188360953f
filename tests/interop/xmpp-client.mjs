// Logs in to the reference's XMPP connection server with npm's @xmpp/client, sends one
// message to a registration token and one to a notification key, and prints the acks as
// one JSON line for the Rust trial to check.
//
// Usage: node xmpp-client.mjs HOST:PORT SENDER_ID SERVER_KEY TOKEN NOTIFICATION_KEY
import { client, xml } from '@xmpp/client';

const [service, senderId, serverKey, token, notificationKey] = process.argv.slice(2);
// The library keeps PLAIN for encrypted connections; the reference's XMPP endpoint is plain
// TCP on loopback (CCS itself was TLS from the first byte), so PLAIN is chosen explicitly.
const xmpp = client({
  service: `xmpp://${service}`,
  domain: 'gcm.googleapis.com',
  resource: 'interop',
  credentials: (authenticate) => authenticate({ username: `${senderId}@gcm.googleapis.com`, password: serverKey }, 'PLAIN'),
});
const answers = {};
const gcm = (json) => xml('message', { id: json.message_id }, xml('gcm', { xmlns: 'google:mobile:data' }, JSON.stringify(json)));
const timer = setTimeout(() => fail(new Error(`timed out; got ${JSON.stringify(answers)}`)), 10000);

function fail(err) {
  console.error(String(err));
  process.exit(1);
}

xmpp.on('error', fail);
xmpp.on('stanza', async (stanza) => {
  const payload = stanza.is('message') && stanza.getChild('gcm', 'google:mobile:data');
  if (!payload) return;
  const json = JSON.parse(payload.text());
  answers[json.message_id] = json;
  if (answers['m-token'] && answers['m-group']) {
    clearTimeout(timer);
    console.log(JSON.stringify(answers));
    await xmpp.stop();
  }
});
xmpp.on('online', async () => {
  await xmpp.send(gcm({ to: token, message_id: 'm-token', data: { hello: 'from @xmpp/client' } }));
  await xmpp.send(gcm({ to: notificationKey, message_id: 'm-group', data: { hello: 'group' } }));
});
xmpp.start().catch(fail);
