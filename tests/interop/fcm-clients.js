// Sends through npm's fcm-node and fcm-push to the reference, with a wrong server key and
// with the right one. Both recognise the real service's 401 by its text ("Unauthorized"),
// after looking for `"error":` and `"multicast_id":`: a JSON 401 would read as another error.
// Prints what each reported as one JSON line for the Rust trial to check.
//
// Usage: node fcm-clients.js BASE_URL SERVER_KEY TOKEN
const https = require('https');
const http = require('http');
// Both libraries speak https to fcm.googleapis.com; the reference listens on plain HTTP.
https.request = http.request;
const FcmNode = require('fcm-node');
const FcmPush = require('fcm-push');

const [url, key, token] = process.argv.slice(2);
const { hostname, port } = new URL(url);
const at = (client) => {
  client.fcmOptions.host = hostname;
  client.fcmOptions.port = Number(port);
  return client;
};
const message = { to: token, data: { hello: 'fcm clients' } };

const viaFcmNode = (serverKey) =>
  new Promise((resolve) => at(new FcmNode(serverKey)).send(message, (err, id) => resolve({ err, id })));
const viaFcmPush = (serverKey) =>
  at(new FcmPush(serverKey))
    .send(message)
    .then((id) => ({ err: null, id }), (err) => ({ err: String(err), id: null }));

(async () => {
  const out = {
    fcm_node: { wrong: await viaFcmNode('AIzaSyNotAServerKeyOfThisServer0000000'), right: await viaFcmNode(key) },
    fcm_push: { wrong: await viaFcmPush('AIzaSyNotAServerKeyOfThisServer0000000'), right: await viaFcmPush(key) },
  };
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
