// A real OAuth 2.0 authorisation server (oidc-provider) that Warden's revoke_token action is tested and demoed
// against: client_credentials tokens, RFC 7009 revocation and RFC 7662 introspection. Started by
// service/demo/oauth_server.py, which passes the clients in WARDEN_OAUTH_CONFIG (JSON, never argv):
//   {"clients": [{"client_id": "...", "client_secret": "..."}], "responders": ["client id", ...]}
// A responder client may revoke and introspect any token this server issued (Warden revokes an agent's token
// with its own credentials); any other client only its own. It listens on 127.0.0.1 on a free port, prints one
// JSON line {"warden_oauth_ready": ISSUER} once it accepts requests, and exits when its stdin closes (the
// launcher died) or on SIGTERM.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(process.env.WARDEN_OAUTH_CONFIG || '{}');
const responders = new Set(config.responders || []);
const host = process.env.WARDEN_OAUTH_HOST || '127.0.0.1';
const port = Number(process.env.WARDEN_OAUTH_PORT || 0);

const clients = (config.clients || []).map(({ client_id, client_secret }) => ({
  client_id,
  client_secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
}));

function mayActOn(client, token) {
  return token.clientId === client.clientId || responders.has(client.clientId);
}

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'warden-test', use: 'sig', alg: 'ES256' };

const server = createServer();
server.listen(port, host, () => {
  const issuer = `http://${host}:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients,
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'agent'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async (ctx, client, token) => mayActOn(client, token) },
      revocation: { enabled: true, allowedPolicy: async (ctx, client, token) => mayActOn(client, token) },
    },
    ttl: { ClientCredentials: 3600 },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ warden_oauth_ready: issuer })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
