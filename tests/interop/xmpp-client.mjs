// Logs in to the reference's XMPP connection server with npm's @xmpp/client, sends one
// message to a registration token and one to a notification key, and prints the acks as
// one JSON line for the Rust trial to check.
//
// Usage: node xmpp-client.mjs HOST:PORT SENDER_ID SERVER_KEY TOKEN NOTIFICATION_KEY [tls]
// With `tls` the endpoint takes TLS from the first byte, as CCS did (NODE_EXTRA_CA_CERTS
// names the server's certificate).
import { client, xml } from '@xmpp/client';

const [service, senderId, serverKey, token, notificationKey, tls] = process.argv.slice(2);
const username = `${senderId}@gcm.googleapis.com`;
const xmpp = client({
  service: tls === 'tls' ? `xmpps://${service}` : `xmpp://${service}`,
  domain: 'gcm.googleapis.com',
  resource: 'interop',
  // Over TLS the library picks PLAIN itself; over plain TCP it keeps PLAIN back, so the
  // loopback test chooses it explicitly.
  ...(tls === 'tls'
    ? { username, password: serverKey }
    : { credentials: (authenticate) => authenticate({ username, password: serverKey }, 'PLAIN') }),
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
