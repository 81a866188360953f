// Sends through npm's node-gcm to the reference: to registration tokens, then to a
// notification key. Prints both responses as one JSON line for the Rust trial to check.
//
// Usage: node node-gcm.js BASE_URL SERVER_KEY TOKEN_1 TOKEN_2 NOTIFICATION_KEY
const gcm = require('node-gcm');

const [url, key, token1, token2, notificationKey] = process.argv.slice(2);
const sender = new gcm.Sender(key, { uri: `${url}/fcm/send` });
const fail = (what) => (err) => {
  console.error(`${what}: ${JSON.stringify(err)}`);
  process.exit(1);
};

const direct = new gcm.Message({ collapseKey: 'score', timeToLive: 3600, data: { score: '3:1' } });
sender.send(direct, { registrationTokens: [token1, token2, 'not-a-registration-id'] }, { retries: 0 }, (err, tokens) => {
  if (err) return fail('send to tokens')(err);
  const group = new gcm.Message({ data: { hello: 'group' } });
  sender.send(group, notificationKey, { retries: 0 }, (err2, groupResponse) => {
    if (err2) return fail('send to the notification key')(err2);
    console.log(JSON.stringify({ tokens, group: groupResponse }));
  });
});
